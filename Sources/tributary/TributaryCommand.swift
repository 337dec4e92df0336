import ArgumentParser
import Foundation
import Tributary

@main
struct TributaryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tributary",
        abstract: "Collects market data from exchanges, stores it and re-broadcasts it live.",
        subcommands: [Serve.self, Migrate.self, Keygen.self],
        defaultSubcommand: Serve.self
    )
}

/// Every setting as a flag; a flag wins over the environment variable of the same name.
struct SettingsOptions: ParsableArguments {
    @Option(help: "Address to bind (HOST, default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on (PORT, default 8000).") var port: String?
    @Option(help: "Directory for the embedded database and key (TRIBUTARY_DATA_DIR, default ./data).") var dataDir: String?
    @Option(help: "postgres://user:password@host:port/database (DATABASE_URL); selects PostgreSQL.") var databaseUrl: String?
    @Option(help: "Base64 32-byte key that encrypts connector secrets (ENCRYPTION_KEY).") var encryptionKey: String?
    @Option(help: "Minimum pooled PostgreSQL connections (DB_POOL_MIN, default 5).") var dbPoolMin: String?
    @Option(help: "Maximum pooled PostgreSQL connections (DB_POOL_MAX, default 20).") var dbPoolMax: String?
    @Option(help: "Seconds a database call may take before the API answers 503 (DB_POOL_TIMEOUT, default 10).") var dbPoolTimeout: String?
    @Option(help: "Flush a batch at this many messages (BATCH_MAX_MESSAGES, default 50).") var batchMaxMessages: String?
    @Option(help: "Flush a batch after this many milliseconds (BATCH_MAX_INTERVAL_MS, default 5000).") var batchMaxIntervalMs: String?
    @Option(help: "Comma-separated API bearer tokens (TRIBUTARY_API_TOKENS).") var apiTokens: String?
    @Option(help: "trace, debug, info, notice, warning, error or critical (LOG_LEVEL, default info).") var logLevel: String?
    @Option(help: "text or json (LOG_FORMAT, default text).") var logFormat: String?

    var overrides: [String: String] {
        let pairs: [(String, String?)] = [
            ("HOST", host), ("PORT", port), ("TRIBUTARY_DATA_DIR", dataDir), ("DATABASE_URL", databaseUrl),
            ("ENCRYPTION_KEY", encryptionKey), ("DB_POOL_MIN", dbPoolMin), ("DB_POOL_MAX", dbPoolMax),
            ("DB_POOL_TIMEOUT", dbPoolTimeout), ("BATCH_MAX_MESSAGES", batchMaxMessages), ("BATCH_MAX_INTERVAL_MS", batchMaxIntervalMs),
            ("TRIBUTARY_API_TOKENS", apiTokens), ("LOG_LEVEL", logLevel), ("LOG_FORMAT", logFormat),
        ]
        return pairs.reduce(into: [:]) { result, pair in if let value = pair.1 { result[pair.0] = value } }
    }

    /// The validated configuration, or a clean exit with the problem in one sentence.
    func load() throws -> AppConfig {
        do {
            return try AppConfig.load(environment: ProcessInfo.processInfo.environment, overrides: overrides)
        } catch {
            throw ConfigError("configuration: \(error.message)")
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server (embedded SQLite unless PostgreSQL is configured).")

    @OptionGroup var settings: SettingsOptions
    @Flag(help: "Allow a non-loopback HOST without API tokens (only on a trusted network).") var insecureNoAuth = false

    func run() async throws {
        var config = try settings.load()
        config.insecureNoAuth = insecureNoAuth
        try config.validateForServing()
        try await runServer(config)
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending schema migrations and exit.")

    @OptionGroup var settings: SettingsOptions

    func run() async throws {
        let config = try settings.load()
        try await runMigrations(config)
        print("schema is up to date (\(config.description))")
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a new ENCRYPTION_KEY (32 random bytes, base64).")

    func run() {
        print(EncryptionKey.generate())
    }
}
