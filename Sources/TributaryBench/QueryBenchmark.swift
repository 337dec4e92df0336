import Foundation
import Logging
import Tributary
import TributarySimulator

/// `tributary bench query`: loads messages across instruments (once; later runs reuse them) and
/// times the typical queries through the store, printing p50/p99 and the query plans.
public struct QueryBenchmark: Sendable {
    public var config: AppConfig
    public var messages = 5_000_000
    public var instruments = 50
    /// Loaded rows span this much time, ending now.
    public var span: TimeInterval = 2 * 86_400
    public var repetitions = 200

    public init(config: AppConfig) { self.config = config }

    static let connectorID = "bench-query"

    public func run(log: @escaping @Sendable (String) -> Void) async throws {
        var logger = Logger(label: "tributary.bench")
        logger.logLevel = .warning
        let benchmark = self
        try await withStore(config, logger: logger) { store in
            try await store.migrate()
            guard let store = store as? any QueryableStore else { return }
            let end = try await benchmark.load(store, log: log)
            try await benchmark.time(store, end: end, log: log)
        }
    }

    func instrument(_ index: Int) -> String { "I\(index % instruments)-USDT" }

    /// Inserts the rows unless a previous run did; returns the time of the newest row.
    func load(_ store: any QueryableStore, log: @Sendable (String) -> Void) async throws -> Date {
        let counted = try await store.messageCounts(connectorID: Self.connectorID).rows
        let existing = try await store.fetch(
            "newest",
            "SELECT timestamp FROM websocket_messages WHERE connector_id = '\(Self.connectorID)' ORDER BY timestamp DESC LIMIT 1",
            []
        )
        if counted >= messages, let newest = try existing.first?.date(0) {
            log("reusing \(counted) loaded messages (connector_id \(Self.connectorID))")
            // A load an earlier version left unfolded (see below).
            _ = try await store.compactCandles()
            return newest
        }
        let start = Date().addingTimeInterval(-span)
        let step = span / Double(messages)
        // Partitioned by day (`MESSAGE_PARTITIONS=daily`): the past days get theirs, as if the
        // rows had come in on those days, instead of all going to the default partition.
        if let postgres = store as? PostgresStore {
            let created = try await postgres.preparePartitions(since: start, now: Date())
            if !created.isEmpty { log("created \(created.count) day partitions from \(created.min() ?? "") on") }
        }
        let began = ContinuousClock.now
        var loaded = counted
        while loaded < messages {
            let count = min(10_000, messages - loaded)
            let batch = (loaded..<(loaded + count)).map { index in
                let receivedAt = start.addingTimeInterval(Double(index) * step)
                let cents = index % 10_000
                let price = "\(20_000 + index % 997).\(cents < 1000 ? "0" : "")\(cents < 100 ? "0" : "")\(cents < 10 ? "0" : "")\(cents)"
                let message = MarketMessage(
                    exchange: .okx,
                    channel: "trades",
                    messageType: .trade,
                    instrument: instrument(index),
                    symbol: instrument(index),
                    price: price,
                    quantity: "0.\(index % 9 + 1)",
                    side: index % 2 == 0 ? "buy" : "sell",
                    sourceID: "bench:\(index)",
                    // A trade's own time, as exchanges send it: with daily partitions, a row with an
                    // identity but no exchange time is looked for in every earlier day (`earlierDays`).
                    exchangeTimestampMs: Int64((receivedAt.timeIntervalSince1970 * 1000).rounded(.down)),
                    raw: .null
                )
                return PendingMessage(
                    connectorID: Self.connectorID,
                    sessionID: "bench",
                    sourceID: "bench:\(index)",
                    message: message,
                    receivedAt: receivedAt
                )
            }
            let record = BatchRecord(batchID: "bench_" + UUID().uuidString.lowercased(), connectorID: Self.connectorID, metrics: [:])
            _ = try await store.insertMessages(batch, batch: record)
            loaded += count
            if loaded % 500_000 == 0 || loaded == messages {
                // What a server's `CandleCompactor` does as it goes: without it the load leaves
                // its candle minutes staged (PostgreSQL), the candle query reads them all, and the
                // next server's first seconds are spent folding them.
                _ = try await store.compactCandles()
                let elapsed = ContinuousClock.now - began
                log("loaded \(loaded) messages (\(Int(Double(loaded - counted) / max(elapsed.inSeconds, 0.001))) rows/s)")
            }
        }
        return start.addingTimeInterval(Double(messages - 1) * step)
    }

    func time(_ store: any QueryableStore, end: Date, log: @Sendable (String) -> Void) async throws {
        var deep = MessageQuery()
        deep.instrument = instrument(7)
        deep.limit = 1
        // A position about 20,000 rows deep into one instrument's newest-first listing.
        deep.until = end.addingTimeInterval(-span * 20_000 / Double(messages / instruments))
        let deepCursor = try await store.messages(deep).first?.cursor
        let cases: [(String, @Sendable (Int) -> (String, [QueryArgument]), @Sendable (Int) async throws -> Int)] = [
            (
                "last 100 messages of one instrument",
                { index in
                    var query = MessageQuery()
                    query.instrument = instrument(index)
                    query.limit = 101
                    return store.messagesStatement(query)
                },
                { index in
                    var query = MessageQuery()
                    query.instrument = instrument(index)
                    query.limit = 101
                    return try await store.messages(query).count
                }
            ),
            (
                "one hour of one instrument",
                { index in
                    store.priceHistoryStatement(instrument: instrument(index), since: end.addingTimeInterval(-3600), until: end, limit: 10_000)
                },
                { index in
                    try await store.priceHistory(
                        instrument: instrument(index),
                        exchange: nil,
                        connectorID: nil,
                        since: end.addingTimeInterval(-3600),
                        until: end,
                        limit: 10_000
                    ).count
                }
            ),
            (
                "one day of 1m candles of one instrument",
                { index in
                    store.candlesStatement(instrument: instrument(index), since: end.addingTimeInterval(-86_400), until: end)
                },
                { index in
                    try await store.candles(
                        instrument: instrument(index),
                        exchange: nil,
                        since: end.addingTimeInterval(-86_400),
                        until: end,
                        interval: .oneMinute
                    )
                    .count
                }
            ),
            (
                "a page of 100 about 20,000 rows deep (cursor)",
                { _ in
                    var query = MessageQuery()
                    query.instrument = instrument(7)
                    query.after = deepCursor
                    query.limit = 101
                    return store.messagesStatement(query)
                },
                { _ in
                    var query = MessageQuery()
                    query.instrument = instrument(7)
                    query.after = deepCursor
                    query.limit = 101
                    return try await store.messages(query).count
                }
            ),
        ]
        for (name, statement, run) in cases {
            _ = try await run(0)
            var samples: [Double] = []
            var rows = 0
            for repetition in 0..<repetitions {
                let started = ContinuousClock.now
                rows = try await run(repetition)
                samples.append((ContinuousClock.now - started).inSeconds * 1000)
            }
            samples.sort()
            func percentile(_ p: Double) -> Double { samples[min(samples.count - 1, Int(Double(samples.count) * p))] }
            log(
                String(
                    format: "%@: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d runs, %d rows each)",
                    name,
                    percentile(0.5),
                    percentile(0.99),
                    samples.last ?? 0,
                    samples.count,
                    rows
                )
            )
            for line in try await store.plan(statement(1)) { log("    plan: \(line)") }
        }
    }
}
