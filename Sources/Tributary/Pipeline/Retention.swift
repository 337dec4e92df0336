import Foundation
import Logging
import Prometheus
import ServiceLifecycle

/// `RETENTION_DAYS`: every `interval` (and once shortly after start) deletes stored messages,
/// poll results, batch records and dead letters older than the retention, in bounded deletes of
/// `batchSize` rows with a pause between them, so ingest keeps its share of the database (and on
/// SQLite, of the one connection). One-minute candles (`candles_1m`) are kept: candle queries
/// over older periods still answer, trade points and raw messages do not.
public struct Retention: Service {
    let store: any MessageSink & SchemaMigrations
    let days: Int
    let metrics: PipelineMetrics
    let logger: Logger
    var interval: Duration = .seconds(3600)
    var firstRun: Duration = .seconds(10)
    var batchSize = 5_000
    var pause: Duration = .milliseconds(50)

    public init(store: any MessageSink & SchemaMigrations, days: Int, metrics: PipelineMetrics, logger: Logger) {
        self.store = store
        self.days = days
        self.metrics = metrics
        self.logger = logger
    }

    public func run() async throws {
        var wait = firstRun
        var failing = false
        while !Task.isShuttingDownGracefully, await sleepUnlessShuttingDown(for: wait) {
            wait = interval
            do {
                try await store.checkReady()
                let deleted = try await cancelWhenGracefulShutdown { try await prune(now: Date()) }
                let total = deleted.values.reduce(0, +)
                if total > 0 || failing {
                    logger.info(
                        "retention: deleted rows older than \(days) days",
                        metadata: deleted.reduce(into: [:]) { $0[$1.key.rawValue] = "\($1.value)" }
                    )
                }
                failing = false
            } catch {
                if Task.isShuttingDownGracefully { break }
                if !failing { logger.warning("retention failed; retrying at the next run", metadata: ["error": "\(error)"]) }
                failing = true
                wait = min(interval, .seconds(60))
            }
        }
    }

    /// Deletes everything older than the retention at `now`, table by table; rows deleted per
    /// table. Where `websocket_messages` is partitioned by day (PostgreSQL), the days wholly
    /// before the cutoff go first, a partition at a time; the bounded deletes then take what is
    /// left (the cutoff's own day, and the default partition's old rows).
    func prune(now: Date) async throws -> [RetainedTable: Int] {
        let cutoff = now.addingTimeInterval(-Double(days) * 86_400)
        let dropped = try await store.dropPartitions(before: cutoff)
        var deleted: [RetainedTable: Int] = [:]
        func counter(_ table: RetainedTable) -> Counter {
            metrics.registry.makeCounter(
                descriptor: MetricsExporter.descriptor("tributary_retention_deleted_rows_total", "Rows deleted by RETENTION_DAYS, by table"),
                labels: [("table", table.rawValue)]
            )
        }
        if !dropped.isEmpty {
            metrics.registry.makeCounter(
                descriptor: MetricsExporter.descriptor(
                    "tributary_retention_dropped_partitions_total",
                    "Day partitions of websocket_messages dropped by RETENTION_DAYS"
                )
            ).increment(by: Int64(dropped.count))
            // A dropped day's rows count as deleted rows of the table, as the bounded deletes' do.
            let rows = dropped.reduce(0) { $0 + $1.rows }
            deleted[.messages] = rows
            counter(.messages).increment(by: Int64(rows))
            logger.info(
                "retention: dropped day partitions of websocket_messages",
                metadata: ["partitions": "\(dropped.map { "\($0.name) (\($0.estimated ? "about " : "")\($0.rows) rows)" })"]
            )
        }
        for table in RetainedTable.allCases {
            let counter = counter(table)
            while true {
                try Task.checkCancellation()
                let count = try await store.deleteRows(of: table, before: cutoff, limit: batchSize)
                deleted[table, default: 0] += count
                counter.increment(by: Int64(count))
                guard count == batchSize else { break }
                try await Task.sleep(for: pause)
            }
        }
        return deleted
    }
}
