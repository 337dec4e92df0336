import ArgumentParser
import Foundation
import Tributary
import TributaryBench
import TributarySimulator

@main
struct TributaryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tributary",
        abstract: "Collects market data from exchanges, stores it and re-broadcasts it live.",
        subcommands: [Serve.self, Migrate.self, Backup.self, Keygen.self, Simulate.self, Bench.self],
        defaultSubcommand: Serve.self
    )
}

/// A benchmark's line, flushed at once: a long run piped to a file shows its progress.
@Sendable func report(_ line: String) {
    print(line)
    fflush(nil)  // every stream: `stdout` itself is shared mutable state to Swift 6
}

/// Every setting as a flag; a flag wins over the environment variable. The naming rule: the
/// variable in lower-case kebab case, without a leading `TRIBUTARY_` (`DB_POOL_MAX` →
/// `--db-pool-max`, `TRIBUTARY_DATA_DIR` → `--data-dir`); each help text names its variable in
/// parentheses. `CommandLineTests` checks both against the README's configuration table.
struct SettingsOptions: ParsableArguments {
    @Option(help: "Address to bind (HOST, default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on (PORT, default 8000).") var port: String?
    @Option(help: "Directory for the embedded database and key (TRIBUTARY_DATA_DIR, default ./data).") var dataDir: String?
    @Option(help: "postgres://user:password@host:port/database (DATABASE_URL); selects PostgreSQL.") var databaseUrl: String?
    @Option(help: "PostgreSQL host (POSTGRES_HOST, default localhost); any POSTGRES_* selects PostgreSQL.") var postgresHost: String?
    @Option(help: "PostgreSQL port (POSTGRES_PORT, default 5432).") var postgresPort: String?
    @Option(help: "PostgreSQL user (POSTGRES_USER, default postgres).") var postgresUser: String?
    @Option(help: "PostgreSQL password (POSTGRES_PASSWORD).") var postgresPassword: String?
    @Option(help: "PostgreSQL database (POSTGRES_DB, default the user).") var postgresDb: String?
    @Option(help: "Base64 32-byte key that encrypts connector secrets (ENCRYPTION_KEY).") var encryptionKey: String?
    @Option(help: "Comma-separated older keys still accepted for decryption during a rotation (ENCRYPTION_KEYS_PREVIOUS).")
    var encryptionKeysPrevious: String?
    @Option(help: "Minimum pooled PostgreSQL connections (DB_POOL_MIN, default 5).") var dbPoolMin: String?
    @Option(help: "Maximum pooled PostgreSQL connections (DB_POOL_MAX, default 20).") var dbPoolMax: String?
    @Option(help: "Seconds a database call may take before the API answers 503 (DB_POOL_TIMEOUT, default 10).") var dbPoolTimeout: String?
    @Option(
        help:
            "Upper bound on the messages in one batch; a batch is written as soon as the writer is free, not when it is full (BATCH_MAX_MESSAGES, default 10000)."
    )
    var batchMaxMessages: String?
    @Option(
        help:
            "Upper bound, in ms, on how long a message waits for its write to start; writes do not wait for it (BATCH_MAX_INTERVAL_MS, default 5000)."
    )
    var batchMaxIntervalMs: String?
    @Option(
        help:
            "While messages stream in, how long in ms a small batch waits after the previous one was taken; a lone message never waits (BATCH_LINGER_MS, default 8; 0 off)."
    )
    var batchLingerMs: String?
    @Option(help: "Comma-separated API bearer tokens (TRIBUTARY_API_TOKENS).") var apiTokens: String?
    @Option(help: "trace, debug, info, notice, warning, error or critical (LOG_LEVEL, default info).") var logLevel: String?
    @Option(help: "text or json (LOG_FORMAT, default text).") var logFormat: String?
    @Option(help: "Reconnect attempts in a row before a connector reports error (CONNECTOR_MAX_RECONNECTS, default 10).")
    var connectorMaxReconnects: String?
    @Option(
        help:
            "How long a stopping WebSocket connector may read what the exchange sent before the close, in ms (CONNECTOR_STOP_DRAIN_MS, default 5000)."
    )
    var connectorStopDrainMs: String?
    @Option(help: "Per-request timeout of REST connectors in milliseconds (REST_TIMEOUT_MS, default 10000).") var restTimeoutMs: String?
    @Option(help: "Largest REST response accepted, in bytes (REST_MAX_RESPONSE_BYTES, default 8388608).") var restMaxResponseBytes: String?
    @Option(help: "Private or loopback ranges connectors may reach: CIDRs or * (TRIBUTARY_ALLOW_PRIVATE_TARGETS, default none).")
    var allowPrivateTargets: String?
    @Option(help: "Browser origins allowed cross-origin, comma-separated, or * (TRIBUTARY_ALLOWED_ORIGINS, default none).")
    var allowedOrigins: String?
    @Option(help: "Host names answered without API tokens besides localhost and --host, comma-separated (TRIBUTARY_ALLOWED_HOSTS).")
    var allowedHosts: String?
    @Option(help: "Most realtime clients at once (MAX_REALTIME_CLIENTS, default 256).") var maxRealtimeClients: String?
    @Option(help: "ms a write runs before its updates go to realtime clients unpersisted (REALTIME_UNPERSISTED_AFTER_MS, default: wait).")
    var realtimeUnpersistedAfterMs: String?
    @Option(help: "Most HTTP connections open at once (MAX_HTTP_CONNECTIONS, default 1024).") var maxHttpConnections: String?
    @Option(help: "Close an idle HTTP connection after this many ms (HTTP_IDLE_TIMEOUT_MS, default 60000).") var httpIdleTimeoutMs: String?
    @Option(help: "A request head must arrive within this many ms (HTTP_HEADER_TIMEOUT_MS, default 10000).") var httpHeaderTimeoutMs: String?
    @Option(help: "Most connectors (MAX_CONNECTORS, default 1000).") var maxConnectors: String?
    @Option(help: "Dead letters kept; older ones are deleted (MAX_DEAD_LETTERS, default 100000).") var maxDeadLetters: String?
    @Option(help: "Delete stored messages older than this many days; candles are kept (RETENTION_DAYS, default: keep everything).")
    var retentionDays: String?
    @Option(
        help:
            "none, or daily: on PostgreSQL, websocket_messages partitioned by UTC day and RETENTION_DAYS drops whole days (MESSAGE_PARTITIONS, default: none)."
    )
    var messagePartitions: String?
    @Option(help: "When messages go to the durable spool: spill, always or off (SPOOL_MODE, default spill).") var spoolMode: String?
    @Option(help: "Spool fsync: batch, interval_ms, off, or an interval in ms (SPOOL_FSYNC, default batch).") var spoolFsync: String?
    @Option(help: "Spool size limit in bytes; connectors pause beyond it (SPOOL_MAX_BYTES, default 1073741824).") var spoolMaxBytes: String?
    @Option(help: "Messages held in memory before the spool takes over (SPOOL_MEMORY_MESSAGES, default 50000).") var spoolMemoryMessages: String?
    @Option(help: "In spill mode, ms a write runs before its messages and those behind it get a spool copy (SPOOL_SLOW_WRITE_MS, default 200).")
    var spoolSlowWriteMs: String?
    @Option(help: "Spool fsync period for SPOOL_FSYNC=interval_ms (SPOOL_FSYNC_INTERVAL_MS, default 100).") var spoolFsyncIntervalMs: String?
    @Option(help: "Most messages held in memory in all (INGEST_BUFFER_CAPACITY, default 500000).") var ingestBufferCapacity: String?
    @Option(help: "Several instances: a lease not renewed for this many ms may be taken over (LEASE_TTL_MS, default 10000).")
    var leaseTtlMs: String?
    @Option(help: "Several instances: renew leases and rebalance every this many ms (LEASE_RENEW_MS, default 2000).") var leaseRenewMs: String?
    @Option(help: "Several instances: the address this one registers in /api/instances (INSTANCE_ADDRESS, default host:port).")
    var instanceAddress: String?

    var overrides: [String: String] {
        let pairs: [(String, String?)] = [
            ("HOST", host), ("PORT", port), ("TRIBUTARY_DATA_DIR", dataDir), ("DATABASE_URL", databaseUrl),
            ("POSTGRES_HOST", postgresHost), ("POSTGRES_PORT", postgresPort), ("POSTGRES_USER", postgresUser),
            ("POSTGRES_PASSWORD", postgresPassword), ("POSTGRES_DB", postgresDb), ("ENCRYPTION_KEYS_PREVIOUS", encryptionKeysPrevious),
            ("ENCRYPTION_KEY", encryptionKey), ("DB_POOL_MIN", dbPoolMin), ("DB_POOL_MAX", dbPoolMax),
            ("DB_POOL_TIMEOUT", dbPoolTimeout), ("BATCH_MAX_MESSAGES", batchMaxMessages), ("BATCH_MAX_INTERVAL_MS", batchMaxIntervalMs),
            ("BATCH_LINGER_MS", batchLingerMs),
            ("TRIBUTARY_API_TOKENS", apiTokens), ("LOG_LEVEL", logLevel), ("LOG_FORMAT", logFormat),
            ("CONNECTOR_MAX_RECONNECTS", connectorMaxReconnects),
            ("CONNECTOR_STOP_DRAIN_MS", connectorStopDrainMs), ("REST_TIMEOUT_MS", restTimeoutMs),
            ("REST_MAX_RESPONSE_BYTES", restMaxResponseBytes), ("TRIBUTARY_ALLOW_PRIVATE_TARGETS", allowPrivateTargets),
            ("TRIBUTARY_ALLOWED_ORIGINS", allowedOrigins), ("TRIBUTARY_ALLOWED_HOSTS", allowedHosts), ("MAX_REALTIME_CLIENTS", maxRealtimeClients),
            ("REALTIME_UNPERSISTED_AFTER_MS", realtimeUnpersistedAfterMs),
            ("MAX_CONNECTORS", maxConnectors), ("MAX_DEAD_LETTERS", maxDeadLetters),
            ("MAX_HTTP_CONNECTIONS", maxHttpConnections), ("HTTP_IDLE_TIMEOUT_MS", httpIdleTimeoutMs),
            ("HTTP_HEADER_TIMEOUT_MS", httpHeaderTimeoutMs), ("SPOOL_MODE", spoolMode), ("SPOOL_FSYNC", spoolFsync),
            ("SPOOL_MAX_BYTES", spoolMaxBytes), ("SPOOL_MEMORY_MESSAGES", spoolMemoryMessages), ("SPOOL_FSYNC_INTERVAL_MS", spoolFsyncIntervalMs),
            ("SPOOL_SLOW_WRITE_MS", spoolSlowWriteMs),
            ("INGEST_BUFFER_CAPACITY", ingestBufferCapacity), ("LEASE_TTL_MS", leaseTtlMs), ("LEASE_RENEW_MS", leaseRenewMs),
            ("INSTANCE_ADDRESS", instanceAddress), ("RETENTION_DAYS", retentionDays), ("MESSAGE_PARTITIONS", messagePartitions),
        ]
        return pairs.reduce(into: [:]) { result, pair in if let value = pair.1 { result[pair.0] = value } }
    }

    /// The configuration of a benchmark: loopback, an ephemeral port, and a temporary data
    /// directory (the spool lives there; SQLite too) that the caller removes.
    func benchConfig(name: String) throws -> AppConfig {
        var config = try load()
        config.host = "127.0.0.1"
        config.port = 0
        config.dataDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("tributary-\(name)-\(UUID().uuidString)").path
        if case .sqlite = config.database { config.database = .sqlite(path: config.dataDirectory + "/tributary.sqlite") }
        return config
    }

    /// The validated configuration, or a clean exit with the problem in one sentence. `defaults`
    /// stand where neither the environment nor a flag sets a value.
    func load(defaults: [String: String] = [:]) throws -> AppConfig {
        do {
            return try AppConfig.load(environment: ProcessInfo.processInfo.environment, overrides: overrides, defaults: defaults)
        } catch {
            throw ConfigError("configuration: \(error.message)")
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server (embedded SQLite unless PostgreSQL is configured).")

    @OptionGroup var settings: SettingsOptions
    @Flag(help: "Allow a non-loopback HOST without API tokens (only on a trusted network).") var insecureNoAuth = false
    @Flag(help: "Also run a local fake exchange and stream from it through an OKX, Binance, Bybit, Coinbase and Kraken connector.")
    var demo = false
    @Option(help: "With --demo: seed of the fake exchange's market (the same seed gives the same trades).") var seed: UInt64?

    func validate() throws {
        if seed != nil, !demo { throw ValidationError("--seed applies to --demo only") }
    }

    func run() async throws {
        var config = try settings.load(defaults: demo ? demoDefaults : [:])
        config.insecureNoAuth = insecureNoAuth
        try config.validateForServing()
        if demo {
            try await runDemo(config, seed: seed ?? 1)
        } else {
            try await runServer(config)
        }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending schema migrations and exit.")

    @OptionGroup var settings: SettingsOptions
    @Flag(help: "Then refill the candle rollup (candles_1m) from every stored trade, e.g. after rows were written around Tributary.")
    var rebuildCandles = false
    @Flag(help: "Then re-encrypt every stored secret under ENCRYPTION_KEY (after a key rotation; older keys in ENCRYPTION_KEYS_PREVIOUS).")
    var resealSecrets = false

    func run() async throws {
        let config = try settings.load()
        let resealed = try await runMigrations(config, rebuildCandles: rebuildCandles, resealSecrets: resealSecrets)
        print(
            "schema is up to date (\(config.description))" + (rebuildCandles ? "; candles rebuilt" : "")
                + (resealSecrets ? "; secrets of \(resealed) connector(s) resealed under the current key" : "")
        )
    }
}

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the embedded SQLite database and its encryption key into a new directory, while the server runs.",
        discussion: "PostgreSQL is backed up with pg_dump instead (see the README's Operations section)."
    )

    @OptionGroup var settings: SettingsOptions
    @Option(help: "Directory to write the copy to (created; must not hold a backup already).") var to: String

    func run() async throws {
        let config = try settings.load()
        for path in try await runBackup(config, to: to) { print("wrote \(path)") }
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a new ENCRYPTION_KEY (32 random bytes, base64).")

    func run() {
        print(EncryptionKey.generate())
    }
}

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a fake exchange (OKX, Binance, Bybit, Coinbase and Kraken trade streams) on 127.0.0.1 for tests and demos."
    )

    @Option(help: "Port to listen on.") var port = 9001
    @Option(help: "Trades per second on each connection; 0 sends as fast as possible.") var rate = 10.0
    @Flag(help: "Vary the rate in spells of lulls (a quarter of --rate) and bursts (three times it).") var bursts = false
    @Option(help: "Seed of the market: prices, sizes, sides and bursts (the same seed gives the same trades).") var seed: UInt64 = 1
    @Option(help: "Trades to send in total, then go quiet; 0 for no limit.") var total = 0
    @Option(help: "Comma-separated instruments (BASE-QUOTE).") var instruments = "BTC-USDT,ETH-USDT"
    @Option(help: "Drop each connection after this many trades (0: never).") var dropEvery = 0
    @Option(help: "Send a malformed frame after every this many trades (0: never).") var malformedEvery = 0
    @Option(help: "OKX: add a record with a value no store keeps after every this many trades per instrument (0: never).")
    var hostileEvery = 0
    @Option(help: "OKX idle rule: close a connection silent in both directions for this many seconds.") var idleTimeout = 30.0
    @Option(help: "Binance keepalive: protocol ping period in seconds.") var pingInterval = 20.0
    @Option(help: "Trades per OKX frame when --rate is 0.") var tradesPerFrame = 1
    @Option(
        help: "At a set rate, send the trades due within this many milliseconds of a wake-up with it (0: each at its own time; the demo uses 1000)."
    )
    var coalesceMs = 0

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0 to 65535") }
        // Below 0.001 a trade's interval (1 / rate seconds) would overflow `Duration` and trap.
        guard rate.isFinite, rate == 0 || (0.001...1_000_000).contains(rate) else {
            throw ValidationError("--rate must be 0 (as fast as possible) or 0.001 to 1000000")
        }
        for (name, seconds) in [("--idle-timeout", idleTimeout), ("--ping-interval", pingInterval)] where !(0.001...86_400).contains(seconds) {
            throw ValidationError("\(name) must be 0.001 to 86400 seconds")
        }
        for (name, value) in [
            ("--total", total), ("--drop-every", dropEvery), ("--malformed-every", malformedEvery), ("--hostile-every", hostileEvery),
        ]
        where value < 0 {
            throw ValidationError("\(name) must not be negative")
        }
        guard (1...1000).contains(tradesPerFrame) else { throw ValidationError("--trades-per-frame must be 1 to 1000") }
        guard (0...60_000).contains(coalesceMs) else { throw ValidationError("--coalesce-ms must be 0 to 60000") }
    }

    func run() async throws {
        var options = SimulatorOptions()
        options.rate = rate
        options.total = total
        options.instruments = instruments.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).uppercased() }
        options.dropEvery = dropEvery
        options.malformedEvery = malformedEvery
        options.hostileEvery = hostileEvery
        options.idleTimeout = .milliseconds(Int(idleTimeout * 1000))
        options.pingInterval = .milliseconds(Int(pingInterval * 1000))
        options.tradesPerFrame = tradesPerFrame
        options.coalesce = .milliseconds(coalesceMs)
        options.bursts = bursts
        options.seed = seed
        try await runSimulator(options, host: "127.0.0.1", port: port)
    }
}

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print figures.",
        subcommands: [Ingest.self, Query.self, Soak.self, Cluster.self, Fanout.self]
    )

    struct Ingest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fake exchange → connector → pipeline → database → realtime client: throughput, latency, memory.",
            discussion: "SQLite by default (a temporary data directory); PostgreSQL with --database-url or DATABASE_URL."
        )

        @OptionGroup var settings: SettingsOptions
        @Option(help: "Messages for the throughput run.") var messages = 200_000
        @Option(help: "Trades per exchange frame in the throughput run.") var tradesPerFrame = 10
        @Option(help: "Messages per second for the latency run.") var latencyRate = 2000.0
        @Option(help: "Seconds of the latency run.") var latencySeconds = 10.0
        @Option(
            help:
                "Instead: a steady run at this many messages per second against a serve process, printing its CPU per message, latency and missing rows."
        )
        var rate: Double?
        @Option(help: "Seconds of the --rate run.") var seconds = 15.0

        func validate() throws {
            if let rate { guard rate.isFinite, (1...100_000).contains(rate) else { throw ValidationError("--rate must be 1 to 100000") } }
            guard seconds.isFinite, (1...3600).contains(seconds) else { throw ValidationError("--seconds must be 1 to 3600") }
            guard (1...100_000_000).contains(messages) else { throw ValidationError("--messages must be 1 to 100000000") }
            guard (1...1000).contains(tradesPerFrame) else { throw ValidationError("--trades-per-frame must be 1 to 1000") }
            guard latencyRate.isFinite, (1...100_000).contains(latencyRate) else { throw ValidationError("--latency-rate must be 1 to 100000") }
            guard latencySeconds.isFinite, (1...3600).contains(latencySeconds) else {
                throw ValidationError("--latency-seconds must be 1 to 3600")
            }
        }

        func run() async throws {
            let config = try settings.benchConfig(name: "bench")
            defer { try? FileManager.default.removeItem(atPath: config.dataDirectory) }
            if let rate {
                var benchmark = RateBenchmark(config: config)
                benchmark.rate = rate
                benchmark.seconds = seconds
                try await benchmark.run(log: report)
                return
            }
            var benchmark = IngestBenchmark(config: config)
            benchmark.messages = messages
            benchmark.tradesPerFrame = tradesPerFrame
            benchmark.latencyRate = latencyRate
            benchmark.latencySeconds = latencySeconds
            print("bench ingest: \(config.description)")
            try await benchmark.run(log: report)
        }
    }

    struct Soak: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A long run at a steady rate with database restarts: memory, file descriptors and spool size over time.",
            discussion:
                "PostgreSQL with --database-url or DATABASE_URL, restarted by --restart-command (e.g. \"pg_ctl -D DIR restart -m fast\"); else SQLite in a temporary directory."
        )

        @OptionGroup var settings: SettingsOptions
        @Option(help: "Minutes to run.") var minutes = 10.0
        @Option(help: "Trades per second.") var rate = 5000.0
        @Option(help: "Seconds between database restarts.") var restartEvery = 120.0
        @Option(help: "Shell command that restarts the database.") var restartCommand: String?
        @Option(help: "Seconds between samples.") var sampleEvery = 10.0

        func validate() throws {
            guard minutes.isFinite, (0.1...1440).contains(minutes) else { throw ValidationError("--minutes must be 0.1 to 1440") }
            guard rate.isFinite, (1...1_000_000).contains(rate) else { throw ValidationError("--rate must be 1 to 1000000") }
            for (name, seconds) in [("--restart-every", restartEvery), ("--sample-every", sampleEvery)] where !(1...86_400).contains(seconds) {
                throw ValidationError("\(name) must be 1 to 86400 seconds")
            }
        }

        func run() async throws {
            let config = try settings.benchConfig(name: "soak")
            defer { try? FileManager.default.removeItem(atPath: config.dataDirectory) }
            var soak = SoakBenchmark(config: config)
            soak.duration = .milliseconds(Int(minutes * 60_000))
            soak.rate = rate
            soak.restartEvery = .milliseconds(Int(restartEvery * 1000))
            soak.restartCommand = restartCommand
            soak.sampleEvery = .milliseconds(Int(sampleEvery * 1000))
            print("bench soak: \(config.description) rate=\(rate)/s minutes=\(minutes) restart_every=\(restartEvery)s")
            try await soak.run(log: report)
        }
    }

    struct Cluster: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Several instances on one PostgreSQL: throughput with 1, 2 and 3 instances, takeover after kill -9 and after a graceful stop.",
            discussion:
                "Needs PostgreSQL (--database-url or DATABASE_URL) and ENCRYPTION_KEY; empties Tributary's tables there. Starts real `tributary serve` processes on 127.0.0.1. On a 2-core machine the throughput figures show the cost of coordination, not a speedup."
        )

        @OptionGroup var settings: SettingsOptions
        @Option(help: "Seconds of each throughput run.") var seconds = 10.0
        @Option(help: "kill -9 takeovers to time.") var kills = 5
        @Option(help: "Messages per second the exchange offers in the throughput runs (six connectors).") var offeredRate = 24_000.0
        @Option(help: "Messages per second of the realtime relay runs (two instances).") var relayRate = 20_000.0
        @Option(help: "Relay runs without and with realtime clients, alternated: how many of each.") var relayRounds = 2

        func validate() throws {
            guard seconds.isFinite, (1...600).contains(seconds) else { throw ValidationError("--seconds must be 1 to 600") }
            guard (1...100).contains(kills) else { throw ValidationError("--kills must be 1 to 100") }
            guard offeredRate.isFinite, (6...600_000).contains(offeredRate) else { throw ValidationError("--offered-rate must be 6 to 600000") }
            guard relayRate.isFinite, (6...600_000).contains(relayRate) else { throw ValidationError("--relay-rate must be 6 to 600000") }
            guard (0...20).contains(relayRounds) else { throw ValidationError("--relay-rounds must be 0 to 20") }
        }

        func run() async throws {
            let config = try settings.benchConfig(name: "cluster")
            defer { try? FileManager.default.removeItem(atPath: config.dataDirectory) }
            var benchmark = ClusterBenchmark(config: config)
            benchmark.seconds = seconds
            benchmark.kills = kills
            benchmark.offeredRate = offeredRate
            benchmark.relayRate = relayRate
            benchmark.relayRounds = relayRounds
            print("bench cluster: \(config.description) lease_ttl=\(config.cluster.leaseTTL) renew=\(config.cluster.renewInterval)")
            try await benchmark.run(log: report)
        }
    }

    struct Fanout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Many realtime clients on one server: delivered updates, latency and server CPU, filtered and unfiltered.",
            discussion:
                "Starts a `tributary serve` process (SQLite in a temporary directory, or PostgreSQL with --database-url or DATABASE_URL) and a `tributary simulate` process on 127.0.0.1; the clients run in this process."
        )

        @OptionGroup var settings: SettingsOptions
        @Option(help: "Realtime clients.") var clients = 100
        @Option(help: "Messages per second from the exchange (four instruments).") var rate = 2000.0
        @Option(help: "Seconds of each phase.") var seconds = 20.0

        func validate() throws {
            guard (1...1000).contains(clients) else { throw ValidationError("--clients must be 1 to 1000") }
            guard rate.isFinite, (1...100_000).contains(rate) else { throw ValidationError("--rate must be 1 to 100000") }
            guard seconds.isFinite, (1...600).contains(seconds) else { throw ValidationError("--seconds must be 1 to 600") }
        }

        func run() async throws {
            let config = try settings.benchConfig(name: "fanout")
            defer { try? FileManager.default.removeItem(atPath: config.dataDirectory) }
            var benchmark = FanoutBenchmark(config: config)
            benchmark.clients = clients
            benchmark.rate = rate
            benchmark.seconds = seconds
            try await benchmark.run(log: report)
        }
    }

    struct Query: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Loads messages across instruments (once) and times typical queries: p50/p99 and query plans.",
            discussion: "SQLite in --data-dir (default ./data) or PostgreSQL with --database-url or DATABASE_URL. Rows are kept for the next run."
        )

        @OptionGroup var settings: SettingsOptions
        @Option(help: "Messages to load.") var messages = 5_000_000
        @Option(help: "Instruments they spread over.") var instruments = 50
        @Option(help: "Runs of each query.") var repetitions = 200
        @Option(help: "Days the loaded messages spread over, ending now (1-3650; more days at the same count: fewer trades an hour).")
        var spanDays = 2

        func validate() throws {
            guard (1...1_000_000_000).contains(messages) else { throw ValidationError("--messages must be 1 to 1000000000") }
            guard (1...10_000).contains(instruments) else { throw ValidationError("--instruments must be 1 to 10000") }
            guard (1...100_000).contains(repetitions) else { throw ValidationError("--repetitions must be 1 to 100000") }
            guard (1...3650).contains(spanDays) else { throw ValidationError("--span-days must be 1 to 3650") }
        }

        func run() async throws {
            let config = try settings.load()
            var benchmark = QueryBenchmark(config: config)
            benchmark.messages = messages
            benchmark.instruments = instruments
            benchmark.repetitions = repetitions
            benchmark.span = Double(spanDays) * 86_400
            print("bench query: \(config.description)")
            try await benchmark.run(log: report)
        }
    }
}
