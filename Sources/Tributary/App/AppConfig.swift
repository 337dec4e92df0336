import Foundation
import Logging

/// Every setting of the server, read once from the environment and command-line flags
/// (flags win) and validated before anything starts.
public struct AppConfig: Sendable {
    public enum LogFormat: String, Sendable {
        case text
        case json
    }

    /// Which database backs the server.
    public enum Database: Sendable, Equatable {
        /// Embedded SQLite in this file.
        case sqlite(path: String)
        case postgres(PostgresSettings)
    }

    public var host = "127.0.0.1"
    public var port = 8000
    public var dataDirectory = "./data"
    public var database: Database = .sqlite(path: "./data/tributary.sqlite")
    public var poolMinimum = 5
    public var poolMaximum = 20
    /// How long any database call may wait before the API answers 503.
    public var poolTimeout: Duration = .seconds(10)
    /// SPEC lists 50, the seed's batch size; capped at 50 a batch costs two thirds of the ingest
    /// throughput (see the README), so the default is the writer's own cap.
    public var batchMaxMessages = 10_000
    public var batchMaxInterval: Duration = .milliseconds(5000)
    /// 8 ms: at a steady 1,000 msg/s about 120 transactions a second instead of 200 at 5 ms, which
    /// took the server's CPU under 0.1 of a core on PostgreSQL for about 3 ms more p99 (README,
    /// "The default linger is 8 ms").
    public var batchLinger: Duration = .milliseconds(Self.defaultBatchLingerMilliseconds)
    public static let defaultBatchLingerMilliseconds = 8
    public var apiTokens: [String] = []
    public var logLevel: Logger.Level = .info
    public var logFormat: LogFormat = .text
    /// Base64 master key; `nil` in embedded mode means "use or create the key file in the data directory".
    public var encryptionKey: String?
    /// Older keys accepted for decryption only, while stored secrets are rotated.
    public var previousEncryptionKeys: [String] = []
    /// Allows serving on a non-loopback address without API tokens.
    public var insecureNoAuth = false
    /// Accepted messages waiting for the writer, at most; beyond it new messages are refused and counted.
    public var ingestBufferCapacity = 500_000
    /// When accepted messages go to the durable spool (`SPOOL_MODE`; it lives in
    /// `<data directory>/spool`), its size limit, its fsync policy, and how many messages wait in
    /// memory before it takes over.
    public var spoolMode: SpoolMode = .spill
    public var spoolMaxBytes = 1 << 30
    public var spoolFsync: SpoolFsync = .batch
    public var spoolMemoryMessages = 50_000
    /// In `spill` mode, how long a write runs before its messages and those waiting behind it get a
    /// spool copy: about what a crash (kill -9) can lose of the stream.
    public var spoolSlowWrite: Duration = .milliseconds(200)
    /// Updates queued per realtime client before the oldest are dropped.
    public var realtimeQueueCapacity = 50_000
    /// How long a write may run before its messages, and those behind it, go to realtime clients
    /// ahead of the commit, marked not persisted; nil (the default): updates wait for their commit
    /// unless the database is unavailable.
    public var realtimeUnpersistedAfter: Duration?
    public var realtimePingInterval: Duration = .seconds(30)
    /// A realtime client whose queue keeps overflowing this long is closed with 1008.
    public var realtimeOverflowGrace: Duration = .seconds(5)
    /// Connector keepalive, reconnect and status timing, and where connectors may connect.
    public var runtime = ConnectorRuntimeSettings()
    /// Browser origins (`https://console.example.com`) allowed to call the API and open
    /// `/api/realtime` cross-origin; `["*"]` allows any. Empty: same-origin only.
    public var allowedOrigins: [String] = []
    /// Host names (besides localhost and the bound address) the server answers to without API tokens.
    public var allowedHosts: [String] = []
    /// Most HTTP connections (realtime ones included) open at once; one more gets a 503.
    public var maxHTTPConnections = 1024
    /// A kept-alive HTTP connection with nothing to read for this long is closed.
    public var httpIdleTimeout: Duration = .seconds(60)
    /// A connection must send its first request head within this long.
    public var httpHeaderTimeout: Duration = .seconds(10)
    /// Most realtime clients connected at once; beyond it the upgrade gets a 503.
    public var maxRealtimeClients = 256
    /// Most dead letters kept; older ones are deleted.
    public var maxDeadLetters = 100_000
    /// Stored rows older than this many days are deleted (`RETENTION_DAYS`); nil keeps everything.
    public var retentionDays: Int?
    /// `MESSAGE_PARTITIONS`: `websocket_messages` as one table, or (PostgreSQL) one partition a day.
    public var messagePartitions: MessagePartitions = .none
    /// Most connectors; creating one more gets a 409.
    public var maxConnectors = 1000
    /// Several instances on one PostgreSQL: lease timing (see `ClusterCoordinator`).
    public var cluster = ClusterSettings()
    /// The address this instance registers in `instances` (`INSTANCE_ADDRESS`); default host:port.
    public var instanceAddress: String?
    /// `serve --demo`: the connector bodies the demo creates (marked demo) and starts once the
    /// schema is current. Nil for a plain `serve`, which never starts a demo connector.
    public var demoConnectors: [JSONValue]?

    public init() {}

    /// Builds the configuration from `overrides` (command-line flags, by setting name) over `environment`.
    /// `defaults` stand where neither sets a value (`serve --demo`'s own, see `demoDefaults`).
    public static func load(
        environment: [String: String],
        overrides: [String: String] = [:],
        defaults: [String: String] = [:]
    ) throws(ConfigError) -> AppConfig {
        var settings = defaults.merging(environment.filter { !$0.value.isEmpty }) { _, set in set }
        settings.merge(overrides) { _, flag in flag }
        var config = AppConfig()
        if let host = settings["HOST"] { config.host = host }
        config.port = try integer(settings, "PORT", default: 8000, range: 0...65535)
        if let directory = settings["TRIBUTARY_DATA_DIR"] { config.dataDirectory = directory }
        config.poolMinimum = try integer(settings, "DB_POOL_MIN", default: 5, range: 0...1000)
        config.poolMaximum = try integer(settings, "DB_POOL_MAX", default: 20, range: 1...1000)
        guard config.poolMinimum <= config.poolMaximum else {
            throw ConfigError("DB_POOL_MIN (\(config.poolMinimum)) must not exceed DB_POOL_MAX (\(config.poolMaximum))")
        }
        config.poolTimeout = try seconds(settings, "DB_POOL_TIMEOUT", default: .seconds(10))
        config.batchMaxMessages = try integer(settings, "BATCH_MAX_MESSAGES", default: 10_000, range: 1...100_000)
        config.batchMaxInterval = .milliseconds(try integer(settings, "BATCH_MAX_INTERVAL_MS", default: 5000, range: 1...3_600_000))
        config.batchLinger = .milliseconds(try integer(settings, "BATCH_LINGER_MS", default: Self.defaultBatchLingerMilliseconds, range: 0...1000))
        if let mode = settings["SPOOL_MODE"] {
            guard let parsed = SpoolMode(rawValue: mode.lowercased()) else {
                throw ConfigError("SPOOL_MODE must be spill, always or off; got \"\(mode)\"")
            }
            config.spoolMode = parsed
        }
        config.spoolMaxBytes = try integer(settings, "SPOOL_MAX_BYTES", default: 1 << 30, range: (1 << 20)...(1 << 50))
        config.spoolMemoryMessages = try integer(settings, "SPOOL_MEMORY_MESSAGES", default: 50_000, range: 0...10_000_000)
        config.spoolSlowWrite = .milliseconds(try integer(settings, "SPOOL_SLOW_WRITE_MS", default: 200, range: 1...3_600_000))
        config.ingestBufferCapacity = try integer(settings, "INGEST_BUFFER_CAPACITY", default: 500_000, range: 1...10_000_000)
        let fsyncInterval = try integer(settings, "SPOOL_FSYNC_INTERVAL_MS", default: 100, range: 1...60_000)
        if let policy = settings["SPOOL_FSYNC"]?.lowercased() {
            switch policy {
            case "batch": config.spoolFsync = .batch
            case "off": config.spoolFsync = .off
            case "interval_ms": config.spoolFsync = .interval(.milliseconds(fsyncInterval))
            default:
                guard let milliseconds = Int(policy), (1...60_000).contains(milliseconds) else {
                    throw ConfigError(
                        "SPOOL_FSYNC must be batch, interval_ms (every SPOOL_FSYNC_INTERVAL_MS), off, or milliseconds from 1 to 60000; got \"\(policy)\""
                    )
                }
                config.spoolFsync = .interval(.milliseconds(milliseconds))
            }
        }
        config.runtime.maxReconnectAttempts = try integer(settings, "CONNECTOR_MAX_RECONNECTS", default: 10, range: 0...1_000_000)
        config.runtime.stopDrainTime = .milliseconds(try integer(settings, "CONNECTOR_STOP_DRAIN_MS", default: 5000, range: 0...120_000))
        config.runtime.restTimeout = .milliseconds(try integer(settings, "REST_TIMEOUT_MS", default: 10_000, range: 100...600_000))
        config.runtime.restMaxResponseBytes = try integer(settings, "REST_MAX_RESPONSE_BYTES", default: 8 << 20, range: 1024...(1 << 30))
        if let targets = settings["TRIBUTARY_ALLOW_PRIVATE_TARGETS"] {
            guard let policy = OutboundPolicy(parsing: targets) else {
                throw ConfigError(
                    "TRIBUTARY_ALLOW_PRIVATE_TARGETS must be * or a comma-separated list of CIDRs (127.0.0.1/32, 10.0.0.0/8); got \"\(targets)\""
                )
            }
            config.runtime.outbound = policy
        }
        config.allowedOrigins = (settings["TRIBUTARY_ALLOWED_ORIGINS"] ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty }
        config.allowedHosts = (settings["TRIBUTARY_ALLOWED_HOSTS"] ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty }
        config.maxHTTPConnections = try integer(settings, "MAX_HTTP_CONNECTIONS", default: 1024, range: 1...1_000_000)
        config.httpIdleTimeout = .milliseconds(try integer(settings, "HTTP_IDLE_TIMEOUT_MS", default: 60_000, range: 100...3_600_000))
        config.httpHeaderTimeout = .milliseconds(try integer(settings, "HTTP_HEADER_TIMEOUT_MS", default: 10_000, range: 100...600_000))
        config.maxRealtimeClients = try integer(settings, "MAX_REALTIME_CLIENTS", default: 256, range: 1...100_000)
        if settings["REALTIME_UNPERSISTED_AFTER_MS"] != nil {
            config.realtimeUnpersistedAfter = .milliseconds(try integer(settings, "REALTIME_UNPERSISTED_AFTER_MS", default: 0, range: 1...3_600_000))
        }
        config.maxDeadLetters = try integer(settings, "MAX_DEAD_LETTERS", default: 100_000, range: 1...100_000_000)
        config.maxConnectors = try integer(settings, "MAX_CONNECTORS", default: 1000, range: 1...100_000)
        if let value = settings["MESSAGE_PARTITIONS"] {
            guard let parsed = MessagePartitions(rawValue: value.lowercased()) else {
                throw ConfigError("MESSAGE_PARTITIONS must be none or daily; got \"\(value.prefix(50))\"")
            }
            config.messagePartitions = parsed
        }
        if settings["RETENTION_DAYS"] != nil {
            config.retentionDays = try integer(settings, "RETENTION_DAYS", default: 0, range: 1...36_500)
        }
        config.cluster.leaseTTL = .milliseconds(try integer(settings, "LEASE_TTL_MS", default: 10_000, range: 1000...600_000))
        config.cluster.renewInterval = .milliseconds(try integer(settings, "LEASE_RENEW_MS", default: 2000, range: 100...60_000))
        guard config.cluster.renewInterval * 3 <= config.cluster.leaseTTL else {
            throw ConfigError("LEASE_RENEW_MS must be at most a third of LEASE_TTL_MS, so a lease is renewed several times before it expires")
        }
        if let address = settings["INSTANCE_ADDRESS"] {
            guard (1...200).contains(address.count), !address.contains(where: \.isWhitespace) else {
                throw ConfigError("INSTANCE_ADDRESS must be 1 to 200 characters without spaces (host:port); got \"\(address.prefix(50))\"")
            }
            config.instanceAddress = address
        }
        config.apiTokens = (settings["TRIBUTARY_API_TOKENS"] ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if let level = settings["LOG_LEVEL"] {
            guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                throw ConfigError("LOG_LEVEL must be one of trace, debug, info, notice, warning, error, critical; got \"\(level)\"")
            }
            config.logLevel = parsed
        }
        if let format = settings["LOG_FORMAT"] {
            guard let parsed = LogFormat(rawValue: format.lowercased()) else {
                throw ConfigError("LOG_FORMAT must be text or json; got \"\(format)\"")
            }
            config.logFormat = parsed
        }

        if let url = settings["DATABASE_URL"] {
            config.database = .postgres(try PostgresSettings(url: url))
        } else if settings.keys.contains(where: { $0.hasPrefix("POSTGRES_") }) {
            let user = settings["POSTGRES_USER"] ?? "postgres"
            config.database = .postgres(
                PostgresSettings(
                    host: settings["POSTGRES_HOST"] ?? "localhost",
                    port: try integer(settings, "POSTGRES_PORT", default: 5432, range: 1...65535),
                    username: user,
                    password: settings["POSTGRES_PASSWORD"],
                    database: settings["POSTGRES_DB"] ?? user,
                    tls: .disable
                )
            )
        } else {
            config.database = .sqlite(path: (config.dataDirectory as NSString).appendingPathComponent("tributary.sqlite"))
        }

        if config.messagePartitions == .daily, case .sqlite = config.database {
            throw ConfigError("MESSAGE_PARTITIONS=daily needs PostgreSQL (DATABASE_URL); SQLite keeps one table and deletes old rows in steps")
        }

        config.encryptionKey = settings["ENCRYPTION_KEY"]
        config.previousEncryptionKeys = (settings["ENCRYPTION_KEYS_PREVIOUS"] ?? "").split(separator: ",").map(String.init)
        if case .postgres = config.database, config.encryptionKey == nil {
            throw ConfigError(
                "ENCRYPTION_KEY is required with PostgreSQL: the key encrypts connector secrets and must be the same on every server. Create one with `tributary keygen`."
            )
        }
        if let key = config.encryptionKey { _ = try EncryptionKey(base64: key) }
        for key in config.previousEncryptionKeys {
            do { _ = try EncryptionKey(base64: key) } catch { throw ConfigError("ENCRYPTION_KEYS_PREVIOUS: \(error.message)") }
        }
        return config
    }

    /// Checks that serving is safe: without API tokens only a loopback address is allowed.
    public func validateForServing() throws(ConfigError) {
        guard apiTokens.isEmpty, !insecureNoAuth, !Self.isLoopback(host) else { return }
        throw ConfigError(
            "refusing to serve on \(host) without API tokens: anyone who can reach it could read and change connectors. Set TRIBUTARY_API_TOKENS, bind HOST=127.0.0.1, or pass --insecure-no-auth if the network is trusted."
        )
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    static func integer(_ settings: [String: String], _ name: String, default value: Int, range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard let text = settings[name] else { return value }
        guard let number = Int(text.trimmingCharacters(in: .whitespaces)), range.contains(number) else {
            throw ConfigError("\(name) must be an integer from \(range.lowerBound) to \(range.upperBound); got \"\(text)\"")
        }
        return number
    }

    static func seconds(_ settings: [String: String], _ name: String, default value: Duration) throws(ConfigError) -> Duration {
        guard let text = settings[name] else { return value }
        guard let number = Double(text.trimmingCharacters(in: .whitespaces)), number > 0, number <= 3600 else {
            throw ConfigError("\(name) must be a number of seconds above 0 (e.g. 10 or 2.5); got \"\(text)\"")
        }
        return .milliseconds(Int((number * 1000).rounded()))
    }
}

extension AppConfig {
    /// The startup log line's metadata, one key per fact: no password, key or token.
    public var logMetadata: Logger.Metadata {
        var metadata: Logger.Metadata = [
            "host": "\(host)", "port": "\(port)", "data_dir": "\(dataDirectory)", "api_tokens": "\(apiTokens.count)",
            "spool_mode": "\(spoolMode.rawValue)", "spool_fsync": "\(spoolFsync)", "batch_max_messages": "\(batchMaxMessages)",
        ]
        switch database {
        case .sqlite(let path):
            metadata["database"] = "sqlite"
            metadata["sqlite_path"] = "\(path)"
        case .postgres(let settings):
            metadata["database"] = "postgres"
            metadata["postgres"] = "\(settings.redactedDescription)"
            metadata["pool_max"] = "\(poolMaximum)"
        }
        return metadata
    }
}

extension AppConfig: CustomStringConvertible {
    /// A summary safe to log: no password, key or token.
    public var description: String {
        let database =
            switch database {
            case .sqlite(let path): "sqlite \(path)"
            case .postgres(let settings): "postgres \(settings.redactedDescription)"
            }
        return
            "host=\(host) port=\(port) database=\(database) pool=\(poolMinimum)...\(poolMaximum) api_tokens=\(apiTokens.count) spool=\(spoolMode.rawValue) fsync=\(spoolFsync)"
    }
}

/// `MESSAGE_PARTITIONS`: how `websocket_messages` is laid out on PostgreSQL.
public enum MessagePartitions: String, Sendable {
    /// One table (the default): `(connector_id, source_id)` unique across it, as SPEC §2 says.
    case none
    /// One partition a UTC day, made ahead; `RETENTION_DAYS` drops whole days (see
    /// `PostgresStore+partitions`).
    case daily
}
