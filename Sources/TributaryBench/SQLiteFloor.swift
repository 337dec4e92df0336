import Foundation
import Logging
import SQLiteNIO
import Tributary

/// The storage floor of `bench ingest --rate` on SQLite: what SQLite itself spends on the rows
/// the server stored, in the transactions it stored them in, at the pace it stored them. The
/// yardstick for "process CPU at a steady rate", as the replay `COPY` is for full speed.
///
/// A fresh file in a scratch directory, opened as the server opens its own (`SQLiteStore.open`:
/// WAL, `synchronous = FULL`, the same page cache), gets the server's schema (copied from its
/// `sqlite_master`). Each batch the server wrote for the run's connector (`websocket_batches`,
/// with the ids of its rows) is replayed as one transaction of plain prepared `INSERT`s of the
/// same message rows and the same batch row, as one job on the store's thread (`SQLiteDirect`)
/// that sleeps between transactions, spread evenly over the run's length; that thread's CPU time
/// (user and system) is the floor. The candle rollup is left out: it is Tributary's own addition,
/// for queries, so the floor is what any collector keeping these rows with this schema and
/// durability spends, whatever it is written in.
struct SQLiteFloor {
    /// A batch: its message rows (every column but `id`) and its batch row (every column but `id`).
    struct Batch: Sendable {
        var rows: [[SQLiteData]]
        var batch: [SQLiteData]
    }

    static let messageColumns = [
        "connector_id", "exchange", "instrument", "message_type", "price", "quantity", "side", "data", "source_id", "session_id",
        "exchange_timestamp", "timestamp",
    ]
    static let batchColumns = ["batch_id", "connector_id", "message_count", "messages", "metrics", "timestamp"]

    /// The most message rows replayed: past them the floor replays the first batches only, at
    /// the run's pace (so it takes that much less time), and holds them in memory meanwhile.
    static let maximumRows = 200_000

    /// Replays what the server at `source` stored for `connectorID` into a new file under
    /// `scratch`, at the pace of `seconds` for all of it.
    static func measure(
        source: String,
        connectorID: String,
        scratch: String,
        over seconds: Double,
        maximumRows: Int = maximumRows,
        logger: Logger
    ) async throws -> FloorMeasurement {
        let (schema, batches, all) = try await onStore(at: source, logger: logger) { db in
            try read(db, connectorID: connectorID, maximumRows: maximumRows)
        }
        guard !batches.isEmpty else { throw BenchmarkError("the server stored no batch") }
        let path = scratch + "/floor.sqlite"
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        let interval = seconds / Double(all)
        let (cpu, elapsed) = try await onStore(at: path, logger: logger) { db in
            try replay(batches, schema: schema, on: db, every: interval)
        }
        return FloorMeasurement(
            name: "storage floor",
            description:
                "the same \(batches.count) transactions of \(batches.reduce(0) { $0 + $1.rows.count }) rows and their batch rows, plain prepared INSERTs on one thread, same schema and pragmas, no candle rollup",
            count: batches.count,
            unit: "a transaction",
            cpuSeconds: cpu,
            elapsed: elapsed
        )
    }

    /// Runs `body` as one job on the thread of a SQLite store opened at `path` (see `SQLiteDirect`).
    static func onStore<Value: Sendable>(
        at path: String,
        logger: Logger,
        _ body: @escaping @Sendable (SQLiteDirect) throws -> Value
    ) async throws -> Value {
        var config = AppConfig()
        config.database = .sqlite(path: path)
        return try await withStore(config, logger: logger) { store in
            guard let sqlite = store as? SQLiteStore else { throw BenchmarkError("not a SQLite store") }
            return try await sqlite.direct.run(body)
        }
    }

    /// The schema's statements (tables first), the connector's batches, oldest first, up to
    /// `maximumRows` rows, and how many batches it has in all.
    static func read(_ db: SQLiteDirect, connectorID: String, maximumRows: Int) throws -> (schema: [String], batches: [Batch], all: Int) {
        let schema = try db.query(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type = 'index', rowid"
        ).compactMap { $0.first?.string }
        // `messages` is the JSON array of the batch's row ids.
        let batchRows = try db.query(
            "SELECT \(batchColumns.joined(separator: ", ")) FROM websocket_batches WHERE connector_id = ? ORDER BY id",
            [.text(connectorID)]
        ).map { row in (row: row, ids: (row[3].string ?? "").split { !$0.isNumber }.compactMap { Int($0) }) }
        var kept = 0
        var rows = 0
        while kept < batchRows.count, rows + batchRows[kept].ids.count <= maximumRows {
            rows += batchRows[kept].ids.count
            kept += 1
        }
        let ids = batchRows.prefix(kept).flatMap(\.ids)
        var messages: [Int: [SQLiteData]] = [:]
        messages.reserveCapacity(ids.count)
        if let low = ids.min(), let high = ids.max() {
            for row in try db.query(
                "SELECT id, \(messageColumns.joined(separator: ", ")) FROM websocket_messages WHERE id BETWEEN ? AND ? AND connector_id = ?",
                [.integer(low), .integer(high), .text(connectorID)]
            ) {
                guard let id = row.first?.integer else { continue }
                messages[id] = Array(row.dropFirst())
            }
        }
        let batches = batchRows.prefix(kept).map { Batch(rows: $0.ids.compactMap { messages[$0] }, batch: $0.row) }
        return (schema, batches, batchRows.count)
    }

    /// Creates `schema` and writes `batches`, one transaction each, starting one every `interval`
    /// seconds; returns this thread's CPU seconds and the time it took.
    static func replay(_ batches: [Batch], schema: [String], on db: SQLiteDirect, every interval: Double) throws -> (Double, Double) {
        for statement in schema { try db.query(statement) }
        let placeholders = { (count: Int) in Array(repeating: "?", count: count).joined(separator: ", ") }
        let insertMessage =
            "INSERT INTO websocket_messages (\(messageColumns.joined(separator: ", "))) VALUES (\(placeholders(messageColumns.count)))"
        let insertBatch = "INSERT INTO websocket_batches (\(batchColumns.joined(separator: ", "))) VALUES (\(placeholders(batchColumns.count)))"
        let cpuBefore = ClusterBenchmark.CPUTime.ofThisThread()
        let started = ContinuousClock.now
        for (index, batch) in batches.enumerated() {
            let wait = started + .seconds(interval * Double(index)) - ContinuousClock.now
            if wait > .zero { Thread.sleep(forTimeInterval: wait.inSeconds) }
            try db.transaction("floor") {
                for row in batch.rows { try db.query(insertMessage, row) }
                try db.query(insertBatch, batch.batch)
            }
        }
        return (ClusterBenchmark.CPUTime.ofThisThread() - cpuBefore, (ContinuousClock.now - started).inSeconds)
    }
}

/// What one floor of `bench ingest --rate` cost: `count` units (transactions, frames) in
/// `cpuSeconds` of CPU over `elapsed` seconds.
struct FloorMeasurement {
    var name: String
    var description: String
    var count: Int
    var unit: String
    var cpuSeconds: Double
    var elapsed: Double

    var cores: Double { cpuSeconds / max(elapsed, 1e-9) }

    var summary: String {
        let figures = String(
            format: "%.2f s over %.1f s = %.3f cores, %.0f µs",
            cpuSeconds,
            elapsed,
            cores,
            cpuSeconds / Double(max(1, count)) * 1_000_000
        )
        return "\(name) (\(description)): \(figures) \(unit)"
    }
}
