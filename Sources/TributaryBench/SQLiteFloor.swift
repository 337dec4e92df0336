import Foundation
import Tributary
import VaporCSQLite

/// The storage floor of `bench ingest --rate` on SQLite: what SQLite itself spends on the rows
/// the server stored, in the transactions it stored them in, at the pace it stored them. The
/// yardstick for "process CPU at a steady rate", as the replay `COPY` is for full speed.
///
/// A fresh file in a scratch directory gets the server's schema (copied from its
/// `sqlite_master`) and pragmas (`SQLiteStore.pragmas`: WAL, `synchronous = FULL`). Each batch
/// the server wrote (`websocket_batches`, with the ids of its rows) is replayed as one
/// transaction of plain prepared `INSERT`s of the same message rows and the same batch row, by
/// one thread that sleeps between transactions, spread evenly over the run's length; that
/// thread's CPU time (user and system) is the floor. The candle rollup is left out: it is
/// Tributary's own addition, for queries, so the floor is what any collector keeping these rows
/// with this schema and durability spends, whatever it is written in.
struct SQLiteFloor {
    struct Measurement {
        var transactions: Int
        var rows: Int
        var cpuSeconds: Double
        var elapsed: Double
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// A batch: its message rows (every column but `id`) and its batch row (every column but `id`).
    struct Batch: Sendable {
        var rows: [[String?]]
        var batch: [String?]
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
        maximumRows: Int = maximumRows
    ) async throws -> Measurement {
        let (schema, batches, all) = try read(source, connectorID: connectorID, maximumRows: maximumRows)
        guard !batches.isEmpty else { throw Failure(description: "the server stored no batch") }
        let interval = seconds / Double(all)
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let path = scratch + "/floor.sqlite"
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        return try await withCheckedThrowingContinuation { continuation in
            // A thread of its own, so its CPU clock holds the floor's work and nothing else.
            Thread.detachNewThread {
                continuation.resume(with: Result { try replay(batches, schema: schema, into: path, every: interval) })
            }
        }
    }

    /// The schema's statements (tables first), the connector's batches, oldest first, up to
    /// `maximumRows` rows, and how many batches it has in all.
    static func read(_ source: String, connectorID: String, maximumRows: Int) throws -> (schema: [String], batches: [Batch], all: Int) {
        let db = try Database(path: source, flags: SQLITE_OPEN_READONLY)
        let schema = try db.rows(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type = 'index', rowid"
        ).compactMap { $0.first ?? nil }
        // `messages` is the JSON array of the batch's row ids.
        let batchRows = try db.rows(
            "SELECT \(batchColumns.joined(separator: ", ")) FROM websocket_batches WHERE connector_id = ? ORDER BY id",
            [connectorID]
        ).map { row in (row: row, ids: (row[3] ?? "").split { !$0.isNumber }.compactMap { Int64($0) }) }
        var kept = 0
        var rows = 0
        while kept < batchRows.count, rows + batchRows[kept].ids.count <= maximumRows {
            rows += batchRows[kept].ids.count
            kept += 1
        }
        let ids = batchRows.prefix(kept).flatMap(\.ids)
        var messages: [Int64: [String?]] = [:]
        messages.reserveCapacity(ids.count)
        if let low = ids.min(), let high = ids.max() {
            for row in try db.rows(
                "SELECT id, \(messageColumns.joined(separator: ", ")) FROM websocket_messages WHERE id BETWEEN ? AND ? AND connector_id = ?",
                ["\(low)", "\(high)", connectorID]
            ) {
                guard let id = row.first.flatMap({ $0.flatMap { Int64($0) } }) else { continue }
                messages[id] = Array(row.dropFirst())
            }
        }
        let batches = batchRows.prefix(kept).map { Batch(rows: $0.ids.compactMap { messages[$0] }, batch: $0.row) }
        return (schema, batches, batchRows.count)
    }

    /// Writes `batches` into a new database at `path`, one transaction each, starting one every
    /// `interval` seconds.
    static func replay(_ batches: [Batch], schema: [String], into path: String, every interval: Double) throws -> Measurement {
        let db = try Database(path: path, flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
        for statement in SQLiteStore.pragmas + schema { try db.execute(statement) }
        let placeholders = { (count: Int) in Array(repeating: "?", count: count).joined(separator: ", ") }
        let insertMessage = try db.prepare(
            "INSERT INTO websocket_messages (\(messageColumns.joined(separator: ", "))) VALUES (\(placeholders(messageColumns.count)))"
        )
        let insertBatch = try db.prepare(
            "INSERT INTO websocket_batches (\(batchColumns.joined(separator: ", "))) VALUES (\(placeholders(batchColumns.count)))"
        )
        let begin = try db.prepare("BEGIN IMMEDIATE")
        let commit = try db.prepare("COMMIT")
        let cpuBefore = ClusterBenchmark.CPUTime.ofThisThread()
        let started = ContinuousClock.now
        var rows = 0
        for (index, batch) in batches.enumerated() {
            let due = started + .seconds(interval * Double(index))
            let wait = due - ContinuousClock.now
            if wait > .zero { Thread.sleep(forTimeInterval: wait.inSeconds) }
            try db.step(begin, [])
            for row in batch.rows { try db.step(insertMessage, row) }
            try db.step(insertBatch, batch.batch)
            try db.step(commit, [])
            rows += batch.rows.count
        }
        return Measurement(
            transactions: batches.count,
            rows: rows,
            cpuSeconds: ClusterBenchmark.CPUTime.ofThisThread() - cpuBefore,
            elapsed: (ContinuousClock.now - started).inSeconds
        )
    }

    /// SQLite's C API (the SQLite SQLiteNIO bundles), only what the floor needs; every value text.
    final class Database {
        let db: OpaquePointer
        var statements: [OpaquePointer] = []

        init(path: String, flags: Int32) throws {
            var db: OpaquePointer?
            let code = sqlite_nio_sqlite3_open_v2(path, &db, flags, nil)
            guard code == SQLITE_OK, let db else {
                sqlite_nio_sqlite3_close(db)
                throw Failure(description: "cannot open \(path): SQLite code \(code)")
            }
            self.db = db
        }

        deinit {
            for statement in statements { sqlite_nio_sqlite3_finalize(statement) }
            sqlite_nio_sqlite3_close(db)
        }

        func prepare(_ sql: String) throws -> OpaquePointer {
            var statement: OpaquePointer?
            guard sqlite_nio_sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK, let statement else { throw error(sql) }
            statements.append(statement)
            return statement
        }

        func execute(_ sql: String) throws {
            guard sqlite_nio_sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw error(sql) }
        }

        func step(_ statement: OpaquePointer, _ values: [String?]) throws {
            defer { sqlite_nio_sqlite3_reset(statement) }
            bind(values, to: statement)
            guard sqlite_nio_sqlite3_step(statement) == SQLITE_DONE else { throw error("a statement") }
        }

        func bind(_ values: [String?], to statement: OpaquePointer) {
            for (offset, value) in values.enumerated() {
                let index = Int32(offset + 1)
                guard var value else {
                    sqlite_nio_sqlite3_bind_null(statement, index)
                    continue
                }
                _ = value.withUTF8 {
                    sqlite_nio_sqlite3_bind_text64(statement, index, $0.baseAddress, UInt64($0.count), Self.transient, UInt8(SQLITE_UTF8))
                }
            }
        }

        func rows(_ sql: String, _ values: [String?] = []) throws -> [[String?]] {
            let statement = try prepare(sql)
            defer { sqlite_nio_sqlite3_reset(statement) }
            bind(values, to: statement)
            let columns = sqlite_nio_sqlite3_column_count(statement)
            var rows: [[String?]] = []
            while true {
                let code = sqlite_nio_sqlite3_step(statement)
                if code == SQLITE_DONE { return rows }
                guard code == SQLITE_ROW else { throw error(sql) }
                rows.append(
                    (0..<columns).map { column in
                        sqlite_nio_sqlite3_column_text(statement, column).map { String(cString: $0) }
                    }
                )
            }
        }

        func error(_ what: String) -> Failure {
            Failure(description: "\(what): \(sqlite_nio_sqlite3_errmsg(db).map { String(cString: $0) } ?? "unknown SQLite error")")
        }

        /// `SQLITE_TRANSIENT`: SQLite copies the bound bytes before the call returns.
        static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)
    }
}
