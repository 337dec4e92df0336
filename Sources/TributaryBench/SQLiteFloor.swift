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

    /// Replays what the server at `source` stored into a new file under `scratch`, over `seconds`.
    static func measure(source: String, scratch: String, over seconds: Double) async throws -> Measurement {
        let (schema, batches) = try read(source)
        guard !batches.isEmpty else { throw Failure(description: "the server stored no batch") }
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let path = scratch + "/floor.sqlite"
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        return try await withCheckedThrowingContinuation { continuation in
            // A thread of its own, so its CPU clock holds the floor's work and nothing else.
            Thread.detachNewThread {
                continuation.resume(with: Result { try replay(batches, schema: schema, into: path, over: seconds) })
            }
        }
    }

    /// The schema's statements (tables first) and the batches, oldest first.
    static func read(_ source: String) throws -> (schema: [String], batches: [Batch]) {
        let db = try Database(path: source, flags: SQLITE_OPEN_READONLY)
        let schema = try db.rows(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type = 'index', rowid"
        ).compactMap { $0.first ?? nil }
        var messages: [Int64: [String?]] = [:]
        for row in try db.rows("SELECT id, \(messageColumns.joined(separator: ", ")) FROM websocket_messages") {
            guard let id = row.first.flatMap({ $0.flatMap { Int64($0) } }) else { continue }
            messages[id] = Array(row.dropFirst())
        }
        var batches: [Batch] = []
        for row in try db.rows("SELECT \(batchColumns.joined(separator: ", ")) FROM websocket_batches ORDER BY id") {
            // `messages` is the JSON array of the batch's row ids.
            let ids = (row[3] ?? "").split { !$0.isNumber }.compactMap { Int64($0) }
            batches.append(Batch(rows: ids.compactMap { messages[$0] }, batch: row))
        }
        return (schema, batches)
    }

    static func replay(_ batches: [Batch], schema: [String], into path: String, over seconds: Double) throws -> Measurement {
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
        let interval = seconds / Double(batches.count)
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
            guard sqlite_nio_sqlite3_step(statement) == SQLITE_DONE else { throw error("a statement") }
        }

        func rows(_ sql: String) throws -> [[String?]] {
            let statement = try prepare(sql)
            defer { sqlite_nio_sqlite3_reset(statement) }
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
