import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization
import Tributary
import TributarySimulator

#if canImport(Glibc)
import Glibc
#endif

/// `tributary bench cluster`: real `tributary serve` processes on one PostgreSQL and an
/// in-process fake exchange. Throughput with 1, 2 and 3 instances (six connectors at full speed),
/// then with three instances and a paced stream: how long a takeover takes after `kill -9` of a
/// connector's owner, and after a graceful stop. It empties the database's Tributary tables first.
public struct ClusterBenchmark: Sendable {
    public var config: AppConfig
    public var seconds = 10.0
    public var kills = 5
    public var instances = [1, 2, 3]
    /// Messages per second the exchange offers over the six connectors in the throughput runs.
    public var offeredRate = 24_000.0
    /// Messages per second of the realtime relay runs (two instances, with and without clients).
    public var relayRate = 20_000.0
    /// Rounds of each relay variant, alternated.
    public var relayRounds = 2

    public init(config: AppConfig) { self.config = config }

    static let instruments = (1...6).map { "C\($0)-USDT" }

    public func run(log: @escaping @Sendable (String) -> Void) async throws {
        guard case .postgres(let settings) = config.database, let key = config.encryptionKey else {
            throw ConfigError("bench cluster needs PostgreSQL: set DATABASE_URL (or --database-url) and ENCRYPTION_KEY")
        }
        var quiet = Logger(label: "tributary.bench")
        quiet.logLevel = .warning
        let logger = quiet
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let store = PostgresStore(settings: settings, poolMaximum: 2, timeout: .seconds(30), logger: logger)
        let directory = config.dataDirectory
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await store.run() }
            defer { tasks.cancelAll() }
            try await store.migrate()
            @Sendable func launch(_ count: Int) async throws -> [Instance] {
                var launched: [Instance] = []
                for index in 1...count {
                    launched.append(
                        try Instance(
                            executable: executable,
                            database: settings,
                            key: key,
                            directory: directory + "/instance\(index)",
                            logger: logger
                        )
                    )
                }
                for instance in launched { try await instance.waitUntilReady() }
                return launched
            }

            // The fake exchange runs as its own process too, so this one only measures.
            func exchange(rate: Double) async throws -> (Child, Int) {
                let port = Instance.freePort()
                let child = try Child(
                    executable: executable,
                    arguments: [
                        "simulate", "--port", "\(port)", "--rate", "\(rate)", "--trades-per-frame", "10", "--instruments",
                        Self.instruments.joined(separator: ","),
                    ],
                    environment: ["PATH=/usr/bin:/bin"],
                    log: directory + "/exchange.log"
                )
                let deadline = ContinuousClock.now + .seconds(30)
                while ContinuousClock.now < deadline, (try? await BenchHTTPClient(port: port).status("/stats")) != 200 {
                    try await Task.sleep(for: .milliseconds(100))
                }
                return (child, port)
            }
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)

            // Throughput: six connectors offered `offeredRate` in all, spread over 1, 2 and 3 instances.
            // (Not an unbounded flood: on 2 cores that starves every process, lease renewals included.)
            do {
                let (flat, port) = try await exchange(rate: offeredRate / Double(Self.instruments.count))
                defer { flat.stop(signal: SIGKILL) }
                log("instances  msg/s     (six connectors offered \(Int(offeredRate)) msg/s in all, \(seconds) s each)")
                for count in instances {
                    try await Self.reset(store)
                    let running = try await launch(count)
                    defer { for instance in running { instance.stop(signal: SIGKILL) } }
                    _ = try await Self.connectors(running[0], exchangePort: port)
                    _ = try await Self.waitUntilOwned(running[0], count: Self.instruments.count, timeout: .seconds(30))
                    let before = try await Self.rows(store)
                    let started = ContinuousClock.now
                    try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                    let rows = try await Self.rows(store) - before
                    let rate = Double(rows) / (ContinuousClock.now - started).inSeconds
                    log(String(format: "%9d  %8.0f", count, rate))
                }
            }

            // Realtime across instances: two instances at `relayRate`, alternately without realtime
            // clients (each batch is still announced with NOTIFY) and with one client on each
            // instance, subscribed to one instrument (each instance reads the other's batches back
            // and sends them on).
            if relayRounds > 0 {
                let (relayed, port) = try await exchange(rate: relayRate / Double(Self.instruments.count))
                defer { relayed.stop(signal: SIGKILL) }
                try await Self.reset(store)
                let running = try await launch(2)
                defer { for instance in running { instance.stop(signal: SIGKILL) } }
                let connectorIDs = try await Self.connectors(running[0], exchangePort: port)
                _ = try await Self.waitUntilOwned(running[0], count: Self.instruments.count, timeout: .seconds(30))
                try await Task.sleep(for: .seconds(2))
                log(
                    "realtime relay, 2 instances, six connectors offered \(Int(relayRate)) msg/s, \(seconds) s a round (CPU in cores: each instance, all PostgreSQL processes)"
                )
                log("clients  msg/s  batches/s  instance CPU  PostgreSQL CPU  \(Self.instruments[0]) updates received at each instance")
                let watched = Self.instruments[0]
                for round in 0..<(relayRounds * 2) {
                    let withClients = round % 2 == 1
                    let clients = withClients ? running.map { _ in RawRealtimeClient() } : []
                    for (client, instance) in zip(clients, running) { try await client.connect(port: instance.port, instrument: watched) }
                    for client in clients { try await client.waitConnected() }
                    let (rowsBefore, batchesBefore) = (try await Self.rows(store), try await Self.batches(store))
                    let cpuBefore = running.map { CPUTime.of(pid: $0.child.pid) }
                    let postgresBefore = CPUTime.postgres()
                    let started = ContinuousClock.now
                    try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                    let elapsed = (ContinuousClock.now - started).inSeconds
                    let rows = try await Self.rows(store) - rowsBefore
                    let batches = try await Self.batches(store) - batchesBefore
                    let cpu = zip(running, cpuBefore).map { (CPUTime.of(pid: $0.child.pid) - $1) / elapsed }
                    let postgres = (CPUTime.postgres() - postgresBefore) / elapsed
                    // Completeness: of every committed batch a client received any row of, it must
                    // have received every row of the watched instrument (a batch is published at
                    // once, so the first and last batch of the window count whole). Read once the
                    // clients have caught up.
                    try await Task.sleep(for: .seconds(2))
                    var completeness: [String] = []
                    let owner = try await Self.owners(running[0])
                    for (client, instance) in zip(clients, running) {
                        let received = Set(client.received.withLock { $0.ids })
                        let expected = try await Self.watchedRows(store, instrument: watched, ofBatchesWithAnyOf: received)
                        let dropped = try await BenchHTTPClient(port: instance.port).metric("tributary_realtime_dropped_updates_total") ?? 0
                        let how = owner[connectorIDs[0]] == instance.instanceID ? "local" : "relayed"
                        completeness.append("\(received.intersection(expected).count) of \(expected.count) \(how) (\(Int(dropped)) dropped)")
                    }
                    for client in clients { client.stop() }
                    log(
                        String(
                            format: "%7d  %5.0f  %9.0f  %@  %14.2f  %@",
                            clients.count,
                            Double(rows) / elapsed,
                            Double(batches) / elapsed,
                            cpu.map { String(format: "%.2f", $0) }.joined(separator: " + ").padding(toLength: 12, withPad: " ", startingAt: 0),
                            postgres,
                            completeness.isEmpty ? "-" : completeness.joined(separator: " / ")
                        )
                    )
                }
            }

            // Failover: three instances, one connector per instrument at 2,000 msg/s in all.
            do {
                let (paced, port) = try await exchange(rate: 2000.0 / Double(Self.instruments.count))
                defer { paced.stop(signal: SIGKILL) }
                try await Self.reset(store)
                var running = try await launch(3)
                defer { for instance in running { instance.stop(signal: SIGKILL) } }
                let ids = try await Self.connectors(running[0], exchangePort: port)
                _ = try await Self.waitUntilOwned(running[0], count: ids.count, timeout: .seconds(30))
                var takeovers: [Duration] = []
                for _ in 0..<kills {
                    try await Task.sleep(for: .seconds(2))
                    let owners = try await Self.owners(running[0])
                    guard let target = ids.first, let owner = owners[target],
                        let victim = running.firstIndex(where: { $0.instanceID == owner })
                    else { continue }
                    let killed = ContinuousClock.now
                    running[victim].stop(signal: SIGKILL)
                    let survivor = running[(victim + 1) % running.count]
                    while ContinuousClock.now - killed < .seconds(30) {
                        if let now = try? await Self.owners(survivor)[target], now != owner { break }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    takeovers.append(ContinuousClock.now - killed)
                    running[victim] = try Instance(
                        executable: executable,
                        database: settings,
                        key: key,
                        directory: running[victim].directory,
                        logger: logger
                    )
                    try await running[victim].waitUntilReady()
                }
                // A graceful stop: how long until another instance holds each of its connectors.
                let owners = try await Self.owners(running[0])
                let leaving = running.count - 1
                let theirs = Set(owners.filter { $0.value == running[leaving].instanceID }.map(\.key))
                let stopped = ContinuousClock.now
                running[leaving].stop(signal: SIGTERM)
                while ContinuousClock.now - stopped < .seconds(30) {
                    let now = (try? await Self.owners(running[0])) ?? [:]
                    if theirs.allSatisfy({ now[$0] != nil && now[$0] != running[leaving].instanceID }) { break }
                    try await Task.sleep(for: .milliseconds(20))
                }
                let handover = ContinuousClock.now - stopped
                let sorted = takeovers.sorted()
                func ms(_ duration: Duration) -> String { String(format: "%.0f ms", duration.inSeconds * 1000) }
                log(
                    "kill -9 of an owner, \(sorted.count) times: takeover median \(sorted.isEmpty ? "-" : ms(sorted[sorted.count / 2])), max \(sorted.last.map(ms) ?? "-") (lease TTL \(config.cluster.leaseTTL))"
                )
                log("graceful stop of an instance with \(theirs.count) connectors: all taken over in \(ms(handover))")
                let duplicates = try await Self.duplicates(store)
                log("duplicate rows (same connector and trade id): \(duplicates)")
            }
        }
    }

    /// Empties the tables the benchmark fills.
    static func reset(_ store: PostgresStore) async throws {
        _ = try await store.run("reset") { client in
            try await client.query(
                "TRUNCATE websocket_messages, websocket_batches, candles_1m, candle_deltas, api_connector_data, connector_leases, instances, dead_letters, api_connectors CASCADE",
                logger: Logger(label: "tributary.bench")
            )
        }
    }

    static func rows(_ store: PostgresStore) async throws -> Int64 {
        try await store.run("count") { client in
            for try await count in try await client.query("SELECT count(*) FROM websocket_messages", logger: Logger(label: "bench")).decode(
                Int64.self
            ) {
                return count
            }
            return 0
        }
    }

    /// The ids of `instrument`'s rows in every batch that wrote any of `ids`.
    static func watchedRows(_ store: PostgresStore, instrument: String, ofBatchesWithAnyOf ids: Set<Int64>) async throws -> Set<Int64> {
        guard let first = ids.min(), let last = ids.max() else { return [] }
        return try await store.run("count") { client in
            let rows = try await client.query(
                """
                WITH batches AS (
                    SELECT b.messages FROM websocket_batches b
                    WHERE EXISTS (SELECT 1 FROM jsonb_array_elements_text(b.messages) AS m(id) WHERE m.id::int8 = ANY(\(Array(ids))::int8[]))
                        AND b.timestamp > NOW() - INTERVAL '10 minutes'
                )
                SELECT COALESCE(array_agg(w.id), '{}') FROM websocket_messages w
                WHERE w.instrument = \(instrument) AND w.id BETWEEN \(first) - 1000000 AND \(last) + 1000000
                    AND w.id IN (SELECT m.id::int8 FROM batches, jsonb_array_elements_text(batches.messages) AS m(id))
                """,
                logger: Logger(label: "bench")
            )
            for try await watched in rows.decode([Int64].self) { return Set(watched) }
            return []
        }
    }

    static func batches(_ store: PostgresStore) async throws -> Int64 {
        try await store.run("count") { client in
            for try await count in try await client.query("SELECT count(*) FROM websocket_batches", logger: Logger(label: "bench")).decode(
                Int64.self
            ) {
                return count
            }
            return 0
        }
    }

    /// CPU seconds (user + system) from `/proc`.
    enum CPUTime {
        static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

        static func of(pid: pid_t) -> Double { of(stat: "/proc/\(pid)/stat") }

        /// The calling thread's (its own clock, not the process's).
        static func ofThisThread() -> Double { of(stat: "/proc/thread-self/stat") }

        static func of(stat path: String) -> Double {
            guard let stat = try? String(contentsOfFile: path, encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return 0 }
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
            return (user + system) / ticksPerSecond
        }

        /// Every process named `postgres` (the server and its backends).
        static func postgres() -> Double {
            let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return pids.compactMap { pid_t($0) }.reduce(0) { total, pid in
                let name = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                return name == "postgres" ? total + of(pid: pid) : total
            }
        }
    }

    static func duplicates(_ store: PostgresStore) async throws -> Int64 {
        try await store.run("duplicates") { client in
            let rows = try await client.query(
                "SELECT count(*) - count(DISTINCT (connector_id, source_id)) FROM websocket_messages",
                logger: Logger(label: "bench")
            )
            for try await count in rows.decode(Int64.self) { return count }
            return 0
        }
    }

    /// One OKX trades connector per instrument, created and started through `instance`.
    static func connectors(_ instance: Instance, exchangePort: Int) async throws -> [String] {
        var ids: [String] = []
        for instrument in instruments {
            let body: JSONValue = .object([
                "name": .string("bench-\(instrument.lowercased())"), "connector_type": "websocket", "exchange": "okx",
                "api_url": .string("ws://127.0.0.1:\(exchangePort)/ws/v5/public"),
                "subscription_message": .object(["op": "subscribe", "args": .array([.object(["channel": "trades", "instId": .string(instrument)])])]),
            ])
            ids.append(try await BenchHTTPClient(port: instance.port).createAndStart(body))
        }
        return ids
    }

    /// connector id → owner instance id, as `instance` sees it.
    static func owners(_ instance: Instance) async throws -> [String: String] {
        let listed = try await BenchHTTPClient(port: instance.port).send("GET", "/api/instances", nil)
        var owners: [String: String] = [:]
        for row in listed["data"]?.arrayValue ?? [] where row["status"] == "alive" {
            for connector in row["connectors"]?.arrayValue ?? [] { owners[connector.stringValue ?? ""] = row["instance_id"]?.stringValue }
        }
        return owners
    }

    static func waitUntilOwned(_ instance: Instance, count: Int, timeout: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if (try? await owners(instance).count) ?? 0 >= count { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// A child process (posix_spawn; its output appended to `log`).
    struct Child: Sendable {
        let pid: pid_t

        init(executable: String, arguments: [String], environment: [String], log: String) throws {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
            var argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
            var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
            defer { for pointer in argv + envp { free(pointer) } }
            var pid: pid_t = 0
            guard posix_spawn(&pid, executable, &actions, nil, &argv, &envp) == 0 else {
                throw ConfigError("could not start \(executable) \(arguments.first ?? "")")
            }
            self.pid = pid
        }

        /// Sends `signal` and reaps the process (a SIGTERM is given 30 s to finish).
        func stop(signal: Int32) {
            kill(pid, signal)
            var status: Int32 = 0
            let deadline = Date().addingTimeInterval(30)
            while waitpid(pid, &status, WNOHANG) == 0, Date() < deadline { usleep(10_000) }
            if Date() >= deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
            }
        }
    }

    /// A `tributary serve` child process on a free port with its own data directory.
    struct Instance: Sendable {
        let child: Child
        let port: Int
        let directory: String
        let instanceID: String

        /// `database` nil: SQLite in the data directory.
        init(
            executable: String,
            database: PostgresSettings?,
            key: String,
            directory: String,
            settings: [String] = [],
            logger: Logger
        ) throws {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            port = Self.freePort()
            self.directory = directory
            instanceID = try InstanceIdentity.load(dataDirectory: directory)
            var environment =
                [
                    "ENCRYPTION_KEY=\(key)", "PORT=\(port)", "HOST=127.0.0.1", "TRIBUTARY_DATA_DIR=\(directory)",
                    "TRIBUTARY_ALLOW_PRIVATE_TARGETS=127.0.0.1/32", "LOG_LEVEL=warning", "PATH=/usr/bin:/bin",
                ] + settings
            if let database {
                environment += [
                    "POSTGRES_HOST=\(database.host)", "POSTGRES_PORT=\(database.port)", "POSTGRES_USER=\(database.username)",
                    "POSTGRES_PASSWORD=\(database.password ?? "")", "POSTGRES_DB=\(database.database)",
                ]
            }
            child = try Child(executable: executable, arguments: ["serve"], environment: environment, log: directory + "/server.log")
        }

        func waitUntilReady() async throws {
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                if let ready = try? await BenchHTTPClient(port: port).status("/ready"), ready == 200 { return }
                try await Task.sleep(for: .milliseconds(100))
            }
            throw ConfigError("instance on port \(port) did not become ready (see \(directory)/server.log)")
        }

        func stop(signal: Int32) { child.stop(signal: signal) }

        /// A port nothing listens on now (bound once on 127.0.0.1 and let go).
        static func freePort() -> Int {
            guard let channel = try? ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
            else { return 0 }
            defer { try? channel.close().wait() }
            return channel.localAddress?.port ?? 0
        }
    }
}
