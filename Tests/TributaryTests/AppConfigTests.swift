import Logging
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

@Suite struct AppConfigTests {
    let key = EncryptionKey.generate()

    @Test func defaultsAreEmbeddedSQLiteOnLoopback() throws {
        let config = try AppConfig.load(environment: [:])
        #expect(config.host == "127.0.0.1")
        #expect(config.port == 8000)
        #expect(config.database == .sqlite(path: "data/tributary.sqlite") || config.database == .sqlite(path: "./data/tributary.sqlite"))
        #expect(config.poolMinimum == 5 && config.poolMaximum == 20 && config.poolTimeout == .seconds(10))
        #expect(config.batchMaxMessages == 10_000 && config.batchMaxInterval == .milliseconds(5000))
        #expect(config.encryptionKey == nil)
    }

    /// `serve --demo` groups its writes a second apart unless the environment or a flag says otherwise.
    @Test func demoDefaultsGiveWayToTheEnvironmentAndFlags() throws {
        #expect(try AppConfig.load(environment: [:]).batchLinger == .milliseconds(8))
        #expect(try AppConfig.load(environment: [:], defaults: demoDefaults).batchLinger == .seconds(1))
        #expect(try AppConfig.load(environment: ["BATCH_LINGER_MS": ""], defaults: demoDefaults).batchLinger == .seconds(1))
        #expect(try AppConfig.load(environment: ["BATCH_LINGER_MS": "5"], defaults: demoDefaults).batchLinger == .milliseconds(5))
        let flagged = try AppConfig.load(environment: ["BATCH_LINGER_MS": "5"], overrides: ["BATCH_LINGER_MS": "20"], defaults: demoDefaults)
        #expect(flagged.batchLinger == .milliseconds(20))
    }

    @Test func databaseURLWinsOverPostgresVariables() throws {
        let config = try AppConfig.load(environment: [
            "DATABASE_URL": "postgresql://etl%40user:p%3Ass@db.internal:6543/etl_tool?sslmode=require",
            "POSTGRES_HOST": "ignored", "ENCRYPTION_KEY": key,
        ])
        #expect(
            config.database
                == .postgres(.init(host: "db.internal", port: 6543, username: "etl@user", password: "p:ss", database: "etl_tool", tls: .require))
        )
    }

    @Test func seedPostgresVariablesSelectPostgreSQL() throws {
        let config = try AppConfig.load(environment: [
            "POSTGRES_HOST": "postgres-db", "POSTGRES_PORT": "5433", "POSTGRES_USER": "etl_user",
            "POSTGRES_PASSWORD": "secure_password", "POSTGRES_DB": "etl_tool", "ENCRYPTION_KEY": key,
        ])
        #expect(
            config.database
                == .postgres(
                    .init(host: "postgres-db", port: 5433, username: "etl_user", password: "secure_password", database: "etl_tool", tls: .disable)
                )
        )
        #expect(!config.description.contains("secure_password"))
    }

    @Test func flagsOverrideTheEnvironment() throws {
        let config = try AppConfig.load(environment: ["PORT": "9000", "LOG_LEVEL": "debug"], overrides: ["PORT": "9100"])
        #expect(config.port == 9100)
        #expect(config.logLevel == .debug)
    }

    @Test(arguments: [
        (["DATABASE_URL": "postgres://u:pw@h/db"], "ENCRYPTION_KEY is required"),
        (["POSTGRES_HOST": "db"], "ENCRYPTION_KEY is required"),
        (["DATABASE_URL": "mysql://u@h/db"], "DATABASE_URL must look like"),
        (["DATABASE_URL": "not a url"], "DATABASE_URL must look like"),
        (["ENCRYPTION_KEY": "too-short"], "ENCRYPTION_KEY must be 32 random bytes"),
        (["PORT": "http"], "PORT must be an integer"),
        (["DB_POOL_MIN": "30", "DB_POOL_MAX": "10"], "DB_POOL_MIN (30) must not exceed DB_POOL_MAX (10)"),
        (["DB_POOL_TIMEOUT": "0"], "DB_POOL_TIMEOUT must be a number of seconds"),
        (["BATCH_MAX_MESSAGES": "0"], "BATCH_MAX_MESSAGES must be an integer"),
        (["LOG_LEVEL": "loud"], "LOG_LEVEL must be one of"),
        (["LOG_FORMAT": "xml"], "LOG_FORMAT must be text or json"),
        (["SPOOL_MODE": "sometimes"], "SPOOL_MODE must be spill, always or off"),
        (["SPOOL_FSYNC": "never"], "SPOOL_FSYNC must be batch, interval_ms"),
        (["SPOOL_FSYNC": "0"], "SPOOL_FSYNC must be batch, interval_ms"),
        (["SPOOL_MAX_BYTES": "1000"], "SPOOL_MAX_BYTES must be an integer"),
        (["REALTIME_UNPERSISTED_AFTER_MS": "0"], "REALTIME_UNPERSISTED_AFTER_MS must be an integer from 1"),
        (["REALTIME_UNPERSISTED_AFTER_MS": "soon"], "REALTIME_UNPERSISTED_AFTER_MS must be an integer from 1"),
    ])
    func invalidSettingsFailWithAClearMessage(_ environment: [String: String], _ message: String) {
        #expect {
            try AppConfig.load(environment: environment)
        } throws: { error in
            (error as? ConfigError)?.message.contains(message) == true
        }
    }

    @Test func realtimeUpdatesWaitForTheirCommitUnlessToldOtherwise() throws {
        #expect(try AppConfig.load(environment: [:]).realtimeUnpersistedAfter == nil)
        #expect(try AppConfig.load(environment: ["REALTIME_UNPERSISTED_AFTER_MS": "10"]).realtimeUnpersistedAfter == .milliseconds(10))
    }

    @Test func spoolSettings() throws {
        let defaults = try AppConfig.load(environment: [:])
        #expect(defaults.spoolMode == .spill && defaults.spoolFsync == .batch && defaults.spoolMaxBytes == 1 << 30)
        let set = try AppConfig.load(environment: [
            "SPOOL_MODE": "always", "SPOOL_FSYNC": "interval_ms", "SPOOL_FSYNC_INTERVAL_MS": "250", "SPOOL_MAX_BYTES": "2097152",
        ])
        #expect(set.spoolMode == .always && set.spoolFsync == .interval(.milliseconds(250)) && set.spoolMaxBytes == 2_097_152)
        #expect(try AppConfig.load(environment: ["SPOOL_FSYNC": "40"]).spoolFsync == .interval(.milliseconds(40)))
        #expect(try AppConfig.load(environment: ["SPOOL_MODE": "OFF"]).spoolMode == .off)
    }

    @Test func errorsNeverEchoThePassword() {
        do {
            _ = try AppConfig.load(environment: ["DATABASE_URL": "postgres://u:hunter2hunter2@h/db"])
            Issue.record("expected an error")
        } catch {
            #expect(!error.message.contains("hunter2"))
        }
    }

    @Test func nonLoopbackHostNeedsTokensOrAnExplicitFlag() throws {
        var config = try AppConfig.load(environment: ["HOST": "0.0.0.0"])
        #expect(throws: ConfigError.self) { try config.validateForServing() }
        config.insecureNoAuth = true
        try config.validateForServing()
        let withTokens = try AppConfig.load(environment: ["HOST": "0.0.0.0", "TRIBUTARY_API_TOKENS": "a, b"])
        #expect(withTokens.apiTokens == ["a", "b"])
        try withTokens.validateForServing()
        for loopback in ["127.0.0.1", "localhost", "::1"] {
            try AppConfig.load(environment: ["HOST": loopback]).validateForServing()
        }
    }
}
