import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import PostgresNIO
import SQLiteNIO
import Synchronization
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// The server without its database: it listens and says so, and catches up when the database comes.
@Suite struct DurabilityTests {
    @Test func theServerListensBeforeItsDatabaseExistsAndBecomesReadyWhenItDoes() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        try await TestBackend.postgres.withConfig { base in
            guard case .postgres(var late) = base.database, let adminURL = TestBackend.adminURL else { return }
            let admin = try PostgresSettings(url: adminURL)
            // A database that does not exist yet: PostgreSQL answers 3D000, as good as down.
            late.database = "tributary_late_\(UUID().uuidString.prefix(8).lowercased())"
            let settings = late
            var config = base
            config.database = .postgres(settings)
            try await TestServer(config: config).run(waitForReady: false) { client in
                #expect(try await client.json(.get, "/health").status == .ok)
                #expect(try await client.json(.get, "/ready").status == .serviceUnavailable)
                let listed = try await client.json(.get, "/api/connectors")
                #expect(listed.status == .serviceUnavailable)
                #expect(listed.body["error_code"] == "DATABASE_UNAVAILABLE")

                try await TestBackend.admin(admin) { try await $0.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(settings.database)")) }
                let deadline = ContinuousClock.now + .seconds(20)
                var ready = false
                while !ready, ContinuousClock.now < deadline {
                    ready = try await client.json(.get, "/ready").status == .ok
                    if !ready { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(ready, "migrated once the database appeared")
                #expect(try await client.json(.get, "/api/connectors").status == .ok)
            }
            try await TestBackend.dropDatabase(settings.database, admin: admin)
        }
    }

    /// Runs a batch writer over `buffer` until `done` holds (or `limit` passes), then stops it.
    static func runWriter(
        _ writer: BatchWriter,
        within limit: Duration = .seconds(20),
        until done: @escaping @Sendable () async throws -> Bool
    ) async throws {
        let task = Task { try await writer.run() }
        // Stopped however this ends: a writer left running would outlive its store.
        defer { task.cancel() }
        let deadline = ContinuousClock.now + limit
        while try await !done(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        task.cancel()
        try await task.value
    }

    @Test(arguments: TestBackend.enabled)
    func batchMaxMessagesCapsEveryBatch(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let buffer = IngestBuffer(capacity: 1000)
                buffer.append(contentsOf: (0..<30).map { HardeningTests.pending($0) })
                let writer = BatchWriter(
                    buffer: buffer,
                    store: store,
                    broadcaster: Broadcaster(),
                    metrics: PipelineMetrics(),
                    maxBatch: 7,
                    logger: Logger(label: "test")
                )
                try await Self.runWriter(writer) { try await store.messageCounts(connectorID: "conn_bisect").rows == 30 }
                let batches = try await store.batches(after: nil, limit: 100)
                #expect(batches.map(\.messageCount).reduce(0, +) == 30)
                #expect(batches.allSatisfy { $0.messageCount <= 7 }, "\(batches.map(\.messageCount))")
                #expect(batches.count >= 5)
            }
        }
    }

    /// Every write slot busy with a slow write (a trigger sleeps 600 ms per batch): a message that
    /// arrives then still has its write started within `BATCH_MAX_INTERVAL_MS` (150 ms here).
    @Test func batchMaxIntervalBoundsTheWaitForAWriteToStart() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        try await TestBackend.postgres.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                _ = try await RawDatabase.strings(
                    config,
                    "CREATE FUNCTION slow_batch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.6); RETURN NEW; END $$"
                )
                _ = try await RawDatabase.strings(
                    config,
                    "CREATE TRIGGER slow_batch BEFORE INSERT ON websocket_batches FOR EACH ROW EXECUTE FUNCTION slow_batch()"
                )
                let buffer = IngestBuffer(capacity: 1000)
                let writer = BatchWriter(
                    buffer: buffer,
                    store: store,
                    broadcaster: Broadcaster(),
                    metrics: PipelineMetrics(),
                    maxBatch: 1,
                    maxWait: .milliseconds(150),
                    logger: Logger(label: "test")
                )
                let feeder = Task {
                    // Two fill both slots (PostgreSQL writes two batches at once); the third waits.
                    for index in 0..<3 {
                        buffer.append(contentsOf: [HardeningTests.pending(index)])
                        try await Task.sleep(for: .milliseconds(30))
                    }
                }
                try await Self.runWriter(writer) { try await store.messageCounts(connectorID: "conn_bisect").rows == 3 }
                try await feeder.value
                let waits = try await store.batches(after: nil, limit: 10).compactMap { batch -> Int? in
                    if case .number(let text) = batch.metrics["oldest_wait_ms"] { return Int(text) }
                    return nil
                }
                #expect(waits.count == 3)
                // Without the bound the third waits for a slot: about 540 ms.
                #expect(waits.allSatisfy { $0 < 400 }, "waits before the write started: \(waits) ms")
            }
        }
    }

    /// Holds the database's write lock from another session for `duration` (SQLite: `BEGIN
    /// IMMEDIATE`; PostgreSQL: `LOCK TABLE` of `table` in `mode`), so writes meanwhile are slow; returns once it holds it.
    static func holdWriteLock(
        _ config: AppConfig,
        for duration: Duration,
        table: String = "websocket_batches",
        mode: String = "EXCLUSIVE"
    ) async throws -> Task<Void, any Error> {
        let holding = SignalledQueue<Bool>(capacity: 1, overflow: .dropOldest)
        let task = Task {
            switch config.database {
            case .sqlite(let path):
                let connection = try await SQLiteConnection.open(storage: .file(path: path))
                _ = try await connection.query("BEGIN IMMEDIATE")
                holding.append(contentsOf: [true])
                try await Task.sleep(for: duration)
                _ = try await connection.query("ROLLBACK")
                try await connection.close()
            case .postgres(let settings):
                try await TestBackend.admin(settings) { client in
                    try await client.withConnection { connection in
                        let logger = Logger(label: "test")
                        try await connection.query("BEGIN", logger: logger)
                        try await connection.query(PostgresQuery(unsafeSQL: "LOCK TABLE \(table) IN \(mode) MODE"), logger: logger)
                        holding.append(contentsOf: [true])
                        try await Task.sleep(for: duration)
                        try await connection.query("ROLLBACK", logger: logger)
                    }
                }
            }
        }
        _ = await holding.take()
        return task
    }

    /// `SPOOL_SLOW_WRITE_MS`: a write held up by another session's lock gets a spool copy of its
    /// messages once it has run that long, and so does every message that arrives behind it, so a
    /// crash meanwhile (a new spool on the same files) replays them all; the copies go once the
    /// rows are in, and a write that is not slow makes none.
    @Test(arguments: TestBackend.enabled)
    func aSlowWriteAndWhatWaitsBehindItGetSpoolCopies(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let directory = SpoolTests.directory()
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let spool = try SpoolTests.spool(directory)
                let buffer = IngestBuffer(capacity: 1000, spool: spool, mode: .spill, memoryMessages: 1000)
                let writer = BatchWriter(
                    buffer: buffer,
                    store: store,
                    broadcaster: Broadcaster(),
                    metrics: PipelineMetrics(),
                    slowWrite: .seconds(1),
                    logger: Logger(label: "test")
                )
                let running = Task { try await writer.run() }
                // A quick write first: no copy.
                buffer.append(contentsOf: [HardeningTests.pending(100)])
                try await Self.waitFor { try await store.messageCounts(connectorID: "conn_bisect").rows == 1 }
                #expect(buffer.slowWritesTotal == 0)
                #expect(spool.snapshot.records == 0)

                let lock = try await Self.holdWriteLock(config, for: .seconds(4))
                buffer.append(contentsOf: (0..<5).map { HardeningTests.pending($0) })
                try await Self.waitFor { spool.snapshot.records >= 5 }
                #expect(spool.snapshot.records == 5, "the slow write's five messages have a copy")
                buffer.append(contentsOf: (5..<8).map { HardeningTests.pending($0) })
                #expect(spool.snapshot.records == 8, "and so do the ones that arrived behind it")
                let rows = try await RawDatabase.strings(config, "SELECT CAST(COUNT(*) AS TEXT) FROM websocket_messages")
                #expect(rows == ["1"], "still held up by the lock")
                // A crash now: the next start replays all eight.
                #expect(try SpoolTests.spool(directory).read(limit: 100).count == 8)

                try await lock.value
                try await Self.waitFor { try await store.messageCounts(connectorID: "conn_bisect").rows == 9 }
                try await Self.waitFor { spool.snapshot.records == 0 }
                #expect(spool.snapshot.records == 0, "the copies go once the rows are in")
                #expect(buffer.slowWritesTotal >= 1)
                buffer.append(contentsOf: [HardeningTests.pending(101)])
                #expect(spool.snapshot.records == 0, "writes are quick again: no copy")
                try await Self.waitFor { try await store.messageCounts(connectorID: "conn_bisect").rows == 10 }
                running.cancel()
                try await running.value
            }
        }
    }

    /// `REALTIME_UNPERSISTED_AFTER_MS`: a write held up by another session's lock sends its
    /// messages to realtime clients once it has run that long, marked not persisted, and every
    /// message that arrives behind it as it arrives, in the order received; none is sent again
    /// once stored, and once the write is over updates wait for their commit again.
    @Test(arguments: TestBackend.enabled)
    func aWriteRunningLongSendsItsUpdatesAheadOfTheCommitInOrder(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let broadcaster = Broadcaster()
                let client = broadcaster.register(filter: RealtimeFilter())
                let buffer = IngestBuffer(
                    capacity: 1000,
                    spool: nil,
                    mode: .off,
                    memoryMessages: 1000,
                    announcesEarly: true,
                    announce: { broadcaster.publish($0.map { StoredMessage(id: nil, pending: $0) }) }
                )
                let writer = BatchWriter(
                    buffer: buffer,
                    store: store,
                    broadcaster: broadcaster,
                    metrics: PipelineMetrics(),
                    unpersistedAfter: .milliseconds(500),
                    logger: Logger(label: "test")
                )
                let running = Task { try await writer.run() }
                let received = Mutex<[JSONValue]>([])
                func hasID(_ update: JSONValue?) -> Bool {
                    if case .number? = update?["id"] { return true }
                    return false
                }
                func updates(atLeast count: Int) async throws -> [JSONValue] {
                    try await Self.waitFor {
                        let texts = client.takeQueued().map(\.text)
                        try received.withLock { $0 += try texts.map { try #require(try JSONValue.parse($0)["data"]) } }
                        return received.withLock { $0.count } >= count
                    }
                    return received.withLock { $0 }
                }
                // A quick write: its update waits for the commit and has its id.
                buffer.append(contentsOf: [HardeningTests.pending(100)])
                let first = try await updates(atLeast: 1)
                #expect(first.count == 1)
                #expect(hasID(first.first))
                #expect(first.first?["persisted"] == nil)

                let lock = try await Self.holdWriteLock(config, for: .seconds(3))
                buffer.append(contentsOf: (0..<5).map { HardeningTests.pending($0) })
                let early = try await updates(atLeast: 6)
                #expect(early.count == 6, "the held write's five messages went out")
                buffer.append(contentsOf: (5..<8).map { HardeningTests.pending($0) })
                let behind = try await updates(atLeast: 9)
                let rows = try await RawDatabase.strings(config, "SELECT CAST(COUNT(*) AS TEXT) FROM websocket_messages")
                #expect(rows == ["1"], "all while the write was still held up")
                let unstored = behind.dropFirst()
                #expect(unstored.map { $0["source_id"]?.stringValue } == (0..<8).map { "okx:trades:BTC-USDT:\($0)" }, "in the order received")
                #expect(unstored.allSatisfy { $0["persisted"] == .bool(false) && $0["id"] == .null })
                #expect(buffer.announcedEarlyTotal == 8)

                try await lock.value
                try await Self.waitFor { try await store.messageCounts(connectorID: "conn_bisect").rows == 9 }
                // The rows are visible a moment before the writer hears its commit and ends the spell.
                try await Self.waitFor { !buffer.announcingEarly }
                #expect(!buffer.announcingEarly)
                buffer.append(contentsOf: [HardeningTests.pending(101)])
                let after = try await updates(atLeast: 10)
                #expect(after.count == 10, "the eight were not sent again once stored")
                #expect(after.last?["source_id"]?.stringValue == "okx:trades:BTC-USDT:101")
                #expect(hasID(after.last), "the write is over: updates wait for their commit again")
                running.cancel()
                try await running.value
            }
        }
    }

    /// Waits until `condition` holds, at most 10 s.
    static func waitFor(_ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while try await !condition(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
    }

    /// A database too slow to finish a full batch within the timeout (a trigger costs 10-12 ms a
    /// row; the timeout is 1 s, so 160 rows take about 2 s). On SQLite, where a write cut off at
    /// its deadline is rolled back, the batch is written again in halves once a retry timed out
    /// too although the database had just answered, and the next batches are taken smaller,
    /// instead of the same write timing out for good. PostgreSQL finishes a statement let go at
    /// its deadline, and the retry finds it committed: every row once, no split needed.
    @Test(arguments: TestBackend.enabled)
    func aBatchTooSlowForTheTimeoutIsWrittenInHalves(_ backend: TestBackend) async throws {
        try await backend.withConfig { base in
            var changed = base
            changed.poolTimeout = .seconds(1)
            let config = changed
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                switch backend {
                case .postgres:
                    _ = try await RawDatabase.strings(
                        config,
                        "CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.012); RETURN NEW; END $$"
                    )
                    _ = try await RawDatabase.strings(
                        config,
                        "CREATE TRIGGER slow_row BEFORE INSERT ON websocket_messages FOR EACH ROW EXECUTE FUNCTION slow_row()"
                    )
                case .sqlite:
                    // No sleep in SQLite's SQL: each row counts a 400 × 400 join, 1.8 times the
                    // 300 × 300 one (about 10 ms a row), with which a fast spell once wrote all 160
                    // rows within the 1 s timeout.
                    let sqlite = try #require(store as? SQLiteStore)
                    _ = try await sqlite.exclusive("slow trigger") { connection in
                        _ = try await connection.query("CREATE TABLE slow_rows (x INTEGER)")
                        _ = try await connection.query(
                            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 400) INSERT INTO slow_rows SELECT x FROM n"
                        )
                        _ = try await connection.query(
                            """
                            CREATE TRIGGER slow_row BEFORE INSERT ON websocket_messages BEGIN
                            SELECT count(*) FROM slow_rows a, slow_rows b WHERE a.x + b.x >= 0; END
                            """
                        )
                    }
                }
                let buffer = IngestBuffer(capacity: 1000)
                buffer.append(contentsOf: (0..<160).map { HardeningTests.pending($0) })
                let writer = BatchWriter(
                    buffer: buffer,
                    store: store,
                    broadcaster: Broadcaster(),
                    metrics: PipelineMetrics(),
                    logger: Logger(label: "test")
                )
                // (While a slow write holds SQLite's one connection, a count times out too.) The
                // trigger's cost is CPU, so a busy machine makes every row slower: up to 60 s.
                try await Self.runWriter(writer, within: .seconds(60)) { (try? await store.messageCounts(connectorID: "conn_bisect").rows) == 160 }
                let counts = try await store.messageCounts(connectorID: "conn_bisect")
                #expect(counts.rows == 160)
                let distinct = try await RawDatabase.strings(config, "SELECT CAST(COUNT(DISTINCT source_id) AS TEXT) FROM websocket_messages")
                #expect(distinct == ["160"])
                guard backend == .sqlite else { return }
                #expect(writer.sizeCap.withLock { $0.messages } < 160, "later batches are taken smaller")
                let before = Set(try await store.batches(after: nil, limit: 100).map(\.batchID))
                buffer.append(contentsOf: (160..<240).map { HardeningTests.pending($0) })
                try await Self.runWriter(writer) { (try? await store.messageCounts(connectorID: "conn_bisect").rows) == 240 }
                let later = try await store.batches(after: nil, limit: 100).filter { !before.contains($0.batchID) && $0.messageCount > 0 }
                #expect(!later.isEmpty && later.allSatisfy { $0.messageCount < 160 }, "\(later.map(\.messageCount))")
            }
        }
    }

    @Test func tradesTheExchangeSentWhileDisconnectedAreCountedFromTradeIDGaps() {
        let counters = ConnectorCounters()
        var first = IngestSession(sessionID: "ws_1", countsTradeGaps: true)
        for id in 1...5 { first.noteTrade("okx:trades:BTC-USDT:\(id)", exchange: .okx, counters: counters) }
        first.noteTrade("okx:trades:ETH-USDT:40", exchange: .okx, counters: counters)
        first.publishTradeIDs(to: counters)
        #expect(counters.missedWhileDisconnected.load(ordering: .relaxed) == 0)
        // Reconnected: BTC-USDT resumes at 9 (6, 7 and 8 went by), ETH-USDT at 41 (nothing missed).
        var second = IngestSession(sessionID: "ws_2", countsTradeGaps: true)
        second.noteTrade("okx:trades:BTC-USDT:9", exchange: .okx, counters: counters)
        second.noteTrade("okx:trades:BTC-USDT:12", exchange: .okx, counters: counters)
        second.noteTrade("okx:trades:ETH-USDT:41", exchange: .okx, counters: counters)
        #expect(counters.missedWhileDisconnected.load(ordering: .relaxed) == 3, "only the jump across the reconnect counts")
        // Ids that are not sequential (Bybit's are UUIDs) are never read as gaps.
        second.noteTrade("bybit:publicTrade:BTCUSDT:7", exchange: .bybit, counters: counters)
        second.publishTradeIDs(to: counters)
        var third = IngestSession(sessionID: "ws_3", countsTradeGaps: true)
        third.noteTrade("bybit:publicTrade:BTCUSDT:900", exchange: .bybit, counters: counters)
        #expect(counters.missedWhileDisconnected.load(ordering: .relaxed) == 3)
    }

    /// Hostile trade ids: the extremes of Int64, negatives, past it, not numbers. None traps, and
    /// none counts as a gap it cannot be.
    @Test func extremeTradeIDsNeitherTrapNorCount() {
        let counters = ConnectorCounters()
        var first = IngestSession(sessionID: "ws_1", countsTradeGaps: true)
        for id in ["-9223372036854775808", "-1", "9223372036854775808", "", "1e3", "x"] {
            first.noteTrade("okx:trades:BTC-USDT:\(id)", exchange: .okx, counters: counters)
        }
        first.noteTrade("okx:trades:ETH-USDT:0", exchange: .okx, counters: counters)
        first.publishTradeIDs(to: counters)
        var second = IngestSession(sessionID: "ws_2", countsTradeGaps: true)
        second.noteTrade("okx:trades:ETH-USDT:9223372036854775807", exchange: .okx, counters: counters)
        second.noteTrade("okx:trades:BTC-USDT:9223372036854775807", exchange: .okx, counters: counters)
        #expect(counters.missedWhileDisconnected.load(ordering: .relaxed) == Int.max - 1, "0 then Int64.max: the jump, clamped")
        // A REST poll (no gap counting) changes nothing.
        var poll = IngestSession(sessionID: "poll_1")
        poll.noteTrade("okx:trades:ETH-USDT:1", exchange: .okx, counters: counters)
        #expect(poll.lastTradeIDs == nil)
    }

    /// Poll rows are on disk before the connector goes on: rows a server never wrote (it died, or
    /// the database was away) are written by the next one.
    @Test(arguments: TestBackend.enabled)
    func pollRowsLeftByAnEarlierRunAreWrittenAtStart(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            let directory = config.dataDirectory + "/spool/polls"
            let rows = (0..<3).map { index in
                APIDataRow(
                    connectorID: "conn_polls",
                    data: #"{"index":\#(index)}"#,
                    rawResponse: #"{"balance":"1.5"}"#,
                    statusCode: 200,
                    responseTimeMs: 12.5,
                    sourceID: "poll_\(index)",
                    sessionID: "poll_\(index)",
                    timestamp: Date()
                )
            }
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                _ = try await store.insertConnector(
                    NewConnector(connectorID: "conn_polls", config: .restSample("polls"), sealedSecrets: SealedSecrets())
                )
                // The first run keeps the rows and dies before writing them.
                let first = PollRows(
                    spool: try Spool(directory: directory, maxBytes: 1 << 30, fsync: .off, logger: Logger(label: "test")),
                    store: store,
                    metrics: PipelineMetrics(),
                    logger: Logger(label: "test")
                )
                for row in rows { #expect(first.append(row)) }
                // The next run writes them.
                let second = PollRows(
                    spool: try Spool(directory: directory, maxBytes: 1 << 30, fsync: .off, logger: Logger(label: "test")),
                    store: store,
                    metrics: PipelineMetrics(),
                    logger: Logger(label: "test")
                )
                #expect(second.depth == 3)
                let task = Task { try await second.run() }
                let deadline = ContinuousClock.now + .seconds(10)
                while try await store.apiData(connectorID: "conn_polls", after: nil, limit: 10).count < 3, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                task.cancel()
                let stored = try await store.apiData(connectorID: "conn_polls", after: nil, limit: 10)
                #expect(Set(stored.compactMap(\.sourceID)) == ["poll_0", "poll_1", "poll_2"])
                #expect(stored.allSatisfy { $0.statusCode == 200 && $0.rawResponse["balance"] == "1.5" })
            }
        }
    }

    /// Restarted while its database is down, the server starts the connectors it ran before (from
    /// the snapshot in its data directory) and spools what they receive.
    @Test func connectorsRunFromTheSnapshotWhenTheDatabaseIsDownAtStart() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        var options = SimulatorOptions()
        options.rate = 200
        let exchange = FakeExchange(options: options)
        try await exchange.withRunning { port in
            try await TestBackend.postgres.withConfig { config in
                let config = StreamingTests.fast(config)
                try await TestServer(config: config).run { client in
                    let created = try await client.json(.post, "/api/connectors", body: StreamingTests.okxBody(port: port))
                    let id = try #require(created.body["connector_id"]?.stringValue)
                    #expect(try await client.json(.post, "/api/connectors/\(id)/start").status == .ok)
                    let flowing = try await eventually { try await StreamingTests.count(config, id) > 20 }
                    #expect(flowing)
                }
                let saved = ConnectorSnapshot(dataDirectory: config.dataDirectory).load()
                #expect(saved.map(\.config.name) == ["okx-sim"])
                // The same data directory, a database that does not exist: as good as down.
                guard case .postgres(var settings) = config.database else { return }
                settings.database = "tributary_missing_\(UUID().uuidString.prefix(8).lowercased())"
                var down = config
                down.database = .postgres(settings)
                let connectionsBefore = exchange.connectionCount
                try await TestServer(config: down).run(waitForReady: false) { client in
                    #expect(try await client.json(.get, "/ready").status == .serviceUnavailable)
                    let spooling = try await eventually(timeout: .seconds(20)) {
                        let text = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
                        let records = text.split(separator: "\n").first { $0.hasPrefix("tributary_spool_records ") }
                        return exchange.connectionCount > connectionsBefore
                            && (records.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0) > 0
                    }
                    #expect(spooling, "the connector reconnected from the snapshot and its messages are spooled")
                }
            }
        }
    }
}
