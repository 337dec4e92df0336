import Logging
import NIOCore
import NIOPosix
import SQLiteNIO
import Synchronization
import VaporCSQLite

/// SQLite's C API on the store's one connection, for work that is many statements: a batch write
/// (`BEGIN`, the rows, the candle minutes, the batch row, `COMMIT`) runs as one job on NIO's
/// thread pool, with its statements prepared once and kept, instead of one trip to the pool and
/// back, and one `sqlite3_prepare`, per statement. At the demo's rate (a transaction per
/// trade) those six trips were about twelve thread wake-ups per batch on the pool alone.
///
/// The same connection, not a second one: a transaction is the same whichever API runs it, and a
/// transaction an earlier call left open is seen here (`sqlite3_get_autocommit`). SQLiteNIO keeps
/// the connection's handle to itself, so it is read once by reflection
/// (`SQLiteConnection.handle.raw`); `SQLiteStore.open` fails if it cannot be found. Calls never
/// overlap: the store's lock is held around each job as around every SQLiteNIO call, and SQLiteNIO
/// opens the connection serialized (`SQLITE_OPEN_FULLMUTEX`).
/// `VaporCSQLite` is the SQLite that SQLiteNIO bundles (a target of the sqlite-nio package, so
/// its functions carry the `sqlite_nio_` prefix); it is not a product, but its module is visible
/// to every module that depends on SQLiteNIO.
package final class SQLiteDirect: @unchecked Sendable {
    // `statements` is touched only inside jobs, which the store's lock serializes.
    private let db: OpaquePointer
    private var statements: [String: OpaquePointer] = [:]
    /// The pool SQLiteNIO runs the connection's calls on (NIO's shared one, never shut down).
    private let pool = NIOThreadPool.singleton
    private let logger: Logger
    /// The running job's cancellation, checked before each statement.
    private let current = Mutex<Cancellation?>(nil)

    /// Prepared statements kept at most; beyond, all are finalized and preparing starts over (a
    /// batch write uses six, `BEGIN IMMEDIATE` and `COMMIT` among them; the limit is for whatever
    /// a later caller runs here).
    static let statementCacheLimit = 64

    final class Cancellation: Sendable {
        let cancelled = Atomic<Bool>(false)
    }

    init?(connection: SQLiteConnection, logger: Logger) {
        let handle = Mirror(reflecting: connection).children.first { $0.label == "handle" }?.value
        guard let handle,
            let raw = Mirror(reflecting: handle).children.first(where: { $0.label == "raw" })?.value as? OpaquePointer?,
            let raw
        else { return nil }
        db = raw
        self.logger = logger
    }

    /// Runs `body` on a thread of the pool. Cancelling the calling task stops it: the running
    /// statement is interrupted (`sqlite3_interrupt`), and no further statement starts.
    package func run<Value: Sendable>(_ body: @escaping @Sendable (SQLiteDirect) throws -> Value) async throws -> Value {
        let cancellation = Cancellation()
        return try await withTaskCancellationHandler {
            try await pool.runIfActive {
                self.current.withLock { $0 = cancellation }
                defer { self.current.withLock { $0 = nil } }
                return try body(self)
            }
        } onCancel: {
            cancellation.cancelled.store(true, ordering: .releasing)
            // Only while this job runs (another job's statement is not to be interrupted).
            self.current.withLock { running in
                if running === cancellation { sqlite_nio_sqlite3_interrupt(self.db) }
            }
        }
    }

    /// Runs `body` in an immediate transaction, rolled back if it throws. A transaction an earlier
    /// call left open (its `COMMIT` and `ROLLBACK` both failed) is rolled back first, as
    /// `SQLiteStore.transaction` does at its `BEGIN`.
    package func transaction<Value>(_ what: String, _ body: () throws -> Value) throws -> Value {
        if sqlite_nio_sqlite3_get_autocommit(db) == 0 {
            logger.warning("rolled back a transaction an earlier call left open", metadata: ["operation": "\(what)"])
            try execute("ROLLBACK")
        }
        try execute("BEGIN IMMEDIATE")
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            // After a failed statement SQLite may have rolled back already; then this finds no transaction.
            if sqlite_nio_sqlite3_get_autocommit(db) == 0 {
                do { try execute("ROLLBACK", checkCancellation: false) } catch let rollback {
                    logger.warning(
                        "could not roll back a failed transaction",
                        metadata: ["operation": "\(what)", "error": "\(error)", "rollback_error": "\(rollback)"]
                    )
                }
            }
            throw error
        }
    }

    /// Runs one statement with `binds` and returns its rows.
    @discardableResult
    package func query(_ sql: String, _ binds: [SQLiteData] = []) throws -> [[SQLiteData]] {
        try execute(sql, binds)
    }

    /// Runs one single-row `INSERT` and returns the new row's id, or nil when it inserted nothing
    /// (`ON CONFLICT DO NOTHING`). Without `RETURNING`, which SQLite runs like a trigger: that
    /// makes the statement need a statement journal.
    func insertedRowID(_ sql: String, _ binds: [SQLiteData]) throws -> Int64? {
        try execute(sql, binds)
        return sqlite_nio_sqlite3_changes64(db) > 0 ? sqlite_nio_sqlite3_last_insert_rowid(db) : nil
    }

    @discardableResult
    private func execute(_ sql: String, _ binds: [SQLiteData] = [], checkCancellation: Bool = true) throws -> [[SQLiteData]] {
        if checkCancellation, current.withLock({ $0?.cancelled.load(ordering: .acquiring) }) == true { throw CancellationError() }
        let statement = try prepared(sql)
        defer {
            sqlite_nio_sqlite3_reset(statement)
            sqlite_nio_sqlite3_clear_bindings(statement)
        }
        for (offset, bind) in binds.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32
            switch bind {
            case .integer(let value): code = sqlite_nio_sqlite3_bind_int64(statement, index, Int64(value))
            case .float(let value): code = sqlite_nio_sqlite3_bind_double(statement, index, value)
            case .null: code = sqlite_nio_sqlite3_bind_null(statement, index)
            case .text(let value):
                var value = value
                code = value.withUTF8 {
                    sqlite_nio_sqlite3_bind_text64(statement, index, $0.baseAddress, UInt64($0.count), Self.transient, UInt8(SQLITE_UTF8))
                }
            case .blob(let buffer):
                code = buffer.withUnsafeReadableBytes {
                    sqlite_nio_sqlite3_bind_blob64(statement, index, $0.baseAddress, UInt64($0.count), Self.transient)
                }
            }
            guard code == SQLITE_OK else { throw failure(code) }
        }
        let columns = sqlite_nio_sqlite3_column_count(statement)
        var rows: [[SQLiteData]] = []
        while true {
            let code = sqlite_nio_sqlite3_step(statement)
            if code == SQLITE_DONE { return rows }
            guard code == SQLITE_ROW else { throw failure(code) }
            rows.append((0..<columns).map { value(statement, $0) })
        }
    }

    /// Statements kept prepared (inside a job).
    var statementCount: Int { statements.count }

    private func prepared(_ sql: String) throws -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        if statements.count >= Self.statementCacheLimit { finalizeAll() }
        var statement: OpaquePointer?
        let code = sqlite_nio_sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard code == SQLITE_OK, let statement else { throw failure(code) }
        statements[sql] = statement
        return statement
    }

    private func value(_ statement: OpaquePointer, _ column: Int32) -> SQLiteData {
        switch sqlite_nio_sqlite3_column_type(statement, column) {
        case SQLITE_INTEGER: return .integer(Int(sqlite_nio_sqlite3_column_int64(statement, column)))
        case SQLITE_FLOAT: return .float(sqlite_nio_sqlite3_column_double(statement, column))
        case SQLITE_TEXT:
            guard let text = sqlite_nio_sqlite3_column_text(statement, column) else { return .text("") }
            let count = Int(sqlite_nio_sqlite3_column_bytes(statement, column))
            return .text(String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self))
        case SQLITE_BLOB:
            let count = Int(sqlite_nio_sqlite3_column_bytes(statement, column))
            guard let bytes = sqlite_nio_sqlite3_column_blob(statement, column), count > 0 else { return .blob(ByteBuffer()) }
            return .blob(ByteBuffer(bytes: UnsafeRawBufferPointer(start: bytes, count: count)))
        default: return .null
        }
    }

    /// The error for result `code`, sorted as `SQLiteStore.translate` sorts SQLiteNIO's.
    private func failure(_ code: Int32) -> any Error {
        let message = sqlite_nio_sqlite3_errmsg(db).map { String(cString: $0) } ?? "unknown error"
        return SQLiteStore.storeError(code: code, message: message)
    }

    private func finalizeAll() {
        for statement in statements.values { sqlite_nio_sqlite3_finalize(statement) }
        statements.removeAll()
    }

    /// Finalizes the kept statements (before the connection closes).
    func close() async throws {
        try await pool.runIfActive { self.finalizeAll() }
    }

    /// `SQLITE_TRANSIENT`: SQLite copies the bound bytes before the call returns.
    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)
}
