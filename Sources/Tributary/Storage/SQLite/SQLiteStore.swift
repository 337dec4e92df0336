import Foundation
import Logging
import SQLiteNIO
import ServiceLifecycle
import Synchronization
import VaporCSQLite

/// The embedded store: one SQLite file in WAL mode in the data directory.
///
/// One connection, with every operation serialized by a lock so transactions never interleave.
/// Batch writes reach it through SQLite's C API (`SQLiteDirect`), everything else through SQLiteNIO.
public final class SQLiteStore: ConnectorStore {
    let connection: SQLiteConnection
    package let direct: SQLiteDirect
    let lock = AsyncLock()
    let inFlight = Atomic<Int>(0)
    let timeout: Duration
    let logger: Logger
    /// The loop the connection completes its calls on (see `MessageSink.eventLoop`).
    public var eventLoop: (any EventLoop)? { connection.eventLoop }

    /// Opens (creating if needed) the database file at `path`.
    public static func open(path: String, timeout: Duration, logger: Logger) async throws -> SQLiteStore {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let connection: SQLiteConnection = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
        guard let direct = SQLiteDirect(connection: connection, logger: logger) else {
            try? await connection.close()
            throw StoreError.unavailable("this version of SQLiteNIO does not show its connection handle (SQLiteDirect)")
        }
        let store = SQLiteStore(connection: connection, direct: direct, timeout: timeout, logger: logger)
        // Durable (WAL, synchronous FULL). A 16 MB page cache instead of SQLite's 2 MB keeps a
        // batch's dirty index pages from spilling to the WAL mid-transaction (`pagerStress` in a
        // profile of `bench ingest`): 35,087 / 36,610 / 43,065 msg/s against 31,570 / 30,149 /
        // 36,588 with the default, in alternated runs.
        let pragmas = [
            "PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL", "PRAGMA foreign_keys = ON", "PRAGMA busy_timeout = 10000",
            "PRAGMA cache_size = -16384",
        ]
        for pragma in pragmas {
            _ = try await connection.query(pragma)
        }
        return store
    }

    /// Calls waiting for or using the connection.
    public var operationsInFlight: Int { inFlight.load(ordering: .relaxed) }

    init(connection: SQLiteConnection, direct: SQLiteDirect, timeout: Duration, logger: Logger) {
        self.connection = connection
        self.direct = direct
        self.timeout = timeout
        self.logger = logger
    }

    /// Runs `body` alone on the connection, within the configured timeout.
    func exclusive<Value: Sendable>(
        _ what: String,
        timeout: Duration? = nil,
        _ body: @escaping @Sendable (SQLiteConnection) async throws -> Value
    ) async throws -> Value {
        inFlight.add(1, ordering: .relaxed)
        defer { inFlight.subtract(1, ordering: .relaxed) }
        do {
            return try await withDeadline(timeout ?? self.timeout, what) { [lock, connection] in
                try await lock.withLock { try await body(connection) }
            }
        } catch let error as SQLiteError {
            throw Self.translate(error)
        }
    }

    /// Sorts SQLite's errors as `PostgresStore.translate` does: busy, locked, I/O, full disk,
    /// memory and interruptions may pass (`unavailable`), and so may misuse (a connection closed
    /// under a call: not the rows' fault, and rejecting them would make every one a dead letter);
    /// constraints, type and size limits and SQL errors meet the same rows again (`rejected`).
    static func translate(_ error: SQLiteError) -> StoreError {
        let reason = String(describing: error.reason)
        let transient = [
            "busy", "locked", "ioError", "full", "noMemory", "interrupt", "cantOpen", "readOnly", "readonly", "proto", "notADatabase", "misuse",
        ]
        let text = "SQLite \(reason): \(error.message.prefix(300))"
        return transient.contains(where: reason.hasPrefix) ? .unavailable(text) : .rejected(text)
    }

    /// The same sorting for a result code of SQLite's C API (`SQLiteDirect`), by its primary code.
    static func storeError(code: Int32, message: String) -> StoreError {
        let transient: Set<Int32> = [
            SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL, SQLITE_NOMEM, SQLITE_INTERRUPT, SQLITE_CANTOPEN, SQLITE_READONLY,
            SQLITE_PROTOCOL, SQLITE_NOTADB, SQLITE_MISUSE,
        ]
        let name = sqlite_nio_sqlite3_errstr(code).map { String(cString: $0) } ?? "error"
        let text = "SQLite \(name) (\(code)): \(message.prefix(300))"
        return transient.contains(code & 0xFF) ? .unavailable(text) : .rejected(text)
    }

    /// Runs `body` in an immediate transaction (taking SQLite's write lock up front).
    func transaction<Value: Sendable>(
        _ what: String,
        timeout: Duration? = nil,
        _ body: @escaping @Sendable (SQLiteConnection) async throws -> Value
    ) async throws -> Value {
        try await exclusive(what, timeout: timeout) { [logger] connection in
            do {
                _ = try await connection.query("BEGIN IMMEDIATE")
            } catch let error as SQLiteError where error.message.contains("within a transaction") {
                // A transaction an earlier call could not end (its COMMIT and ROLLBACK both
                // failed). Its caller was told it failed, so nothing it wrote is owed: end it
                // here, or every later write on the one connection fails the same way. (Seen
                // when a cancelled call's ROLLBACK failed with `CancellationError` too.)
                logger.warning("rolled back a transaction an earlier call left open", metadata: ["operation": "\(what)"])
                _ = try await connection.query("ROLLBACK")
                _ = try await connection.query("BEGIN IMMEDIATE")
            }
            do {
                let value = try await body(connection)
                _ = try await connection.query("COMMIT")
                return value
            } catch {
                do {
                    // In a task of its own: a call cancelled at its deadline fails its queries with
                    // `CancellationError`, and the ROLLBACK must run all the same.
                    _ = try await Task { try await connection.query("ROLLBACK") }.value
                } catch let rollback {
                    logger.warning(
                        "could not roll back a failed transaction",
                        metadata: ["operation": "\(what)", "error": "\(error)", "rollback_error": "\(rollback)"]
                    )
                }
                throw error
            }
        }
    }

    public func migrate() async throws {
        try await transaction("migrate", timeout: Migrations.timeout) { [direct] connection in
            _ = try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')))
                """
            )
            let applied = Set(try await connection.query("SELECT version FROM schema_migrations").compactMap { $0.column("version")?.integer })
            for migration in Migrations.all where !applied.contains(Int(migration.version)) {
                for statement in migration.sqlite { _ = try await connection.query(statement) }
                if migration.rebuildsCandles { try await Self.rebuildCandles(on: direct) }
                _ = try await connection.query(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    [.integer(migration.version), .text(migration.name)]
                )
            }
        }
    }

    public func checkReady() async throws {
        let version = try await exclusive("readiness check") { connection in
            try await connection.query("SELECT MAX(version) AS version FROM schema_migrations").first?.column("version")?.integer
        }
        guard version == Migrations.latestVersion else {
            throw StoreError.unavailable("schema at version \(version ?? 0), expected \(Migrations.latestVersion)")
        }
    }

    public func insertConnector(_ connector: NewConnector) async throws -> ConnectorRecord {
        let now = Timestamp.format(Date())
        return try await transaction("insert connector") { connection in
            do {
                _ = try await connection.query(
                    """
                    INSERT INTO api_connectors (connector_id, name, connector_type, exchange, api_url, http_method, request_body,
                        subscription_message, auth_type, api_key, api_secret, passphrase, bearer_token, headers, query_params, signing,
                        polling_interval, field_mapping, desired_state, created_at, updated_at, demo)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'stopped', ?, ?, ?)
                    """,
                    [.text(connector.connectorID)] + Self.binds(connector.config, connector.sealedSecrets)
                        + [.text(now), .text(now), .integer(connector.demo ? 1 : 0)]
                )
            } catch let error as SQLiteError where error.reason == .constraintUniqueFailed || error.reason == .constraint {
                throw StoreError.duplicateName
            }
            _ = try await connection.query(
                "INSERT INTO connector_status (connector_id, status, updated_at) VALUES (?, 'stopped', ?)",
                [.text(connector.connectorID), .text(now)]
            )
            guard let record = try await Self.fetch(connector.connectorID, on: connection) else {
                throw StoreError.corrupt("connector \(connector.connectorID) vanished inside its insert")
            }
            return record
        }
    }

    public func listConnectors(limit: Int, offset: Int) async throws -> (connectors: [ConnectorRecord], total: Int) {
        try await exclusive("list connectors") { connection in
            let rows = try await connection.query(
                ConnectorColumns.select(jsonCast: "") + " ORDER BY c.id LIMIT ? OFFSET ?",
                [.integer(limit), .integer(offset)]
            )
            let total = try await connection.query("SELECT COUNT(*) AS total FROM api_connectors").first?.column("total")?.integer ?? 0
            return (try rows.map { try ConnectorRecord(row: SQLiteStoredRow(row: $0)) }, total)
        }
    }

    public func connector(id: String) async throws -> ConnectorRecord? {
        try await exclusive("get connector") { connection in try await Self.fetch(id, on: connection) }
    }

    public func updateConnector(id: String, config: ConnectorConfig, sealedSecrets: SealedSecrets) async throws -> ConnectorRecord? {
        let now = Timestamp.format(Date())
        return try await transaction("update connector") { connection in
            do {
                _ = try await connection.query(
                    """
                    UPDATE api_connectors SET name = ?, connector_type = ?, exchange = ?, api_url = ?, http_method = ?, request_body = ?,
                        subscription_message = ?, auth_type = ?, api_key = ?, api_secret = ?, passphrase = ?, bearer_token = ?,
                        headers = ?, query_params = ?, signing = ?, polling_interval = ?, field_mapping = ?, updated_at = ?
                    WHERE connector_id = ?
                    """,
                    Self.binds(config, sealedSecrets) + [.text(now), .text(id)]
                )
            } catch let error as SQLiteError where error.reason == .constraintUniqueFailed || error.reason == .constraint {
                throw StoreError.duplicateName
            }
            return try await Self.fetch(id, on: connection)
        }
    }

    public func deleteConnector(id: String) async throws -> Bool {
        try await exclusive("delete connector") { connection in
            let deleted = try await connection.query("DELETE FROM api_connectors WHERE connector_id = ? RETURNING id", [.text(id)])
            return !deleted.isEmpty
        }
    }

    public func setState(id: String, desired: DesiredState, status: ConnectorState, restarted: Bool) async throws -> ConnectorRecord? {
        let now = Timestamp.format(Date())
        return try await transaction("set connector state") { connection in
            let updated = try await connection.query(
                "UPDATE api_connectors SET desired_state = ?, updated_at = ? WHERE connector_id = ? RETURNING id",
                [.text(desired.rawValue), .text(now), .text(id)]
            )
            guard !updated.isEmpty else { return nil }
            _ = try await connection.query(
                """
                INSERT INTO connector_status (connector_id, status, started_at, updated_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (connector_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,
                    started_at = CASE WHEN ? THEN excluded.started_at ELSE connector_status.started_at END
                """,
                [.text(id), .text(status.rawValue), restarted ? .text(now) : .null, .text(now), .integer(restarted ? 1 : 0)]
            )
            return try await Self.fetch(id, on: connection)
        }
    }

    /// Holds the connection open until shutdown or cancellation, then closes it.
    public func run() async throws {
        try? await gracefulShutdown()
        // Closing must happen even when this task is cancelled, which would stop the thread-pool hop.
        let (connection, direct) = (self.connection, self.direct)
        try await Task {
            try await lock.withLock {
                // Its statements first: a connection with statements left open does not close.
                try await direct.close()
                try await connection.close()
            }
        }.value
    }

    static func fetch(_ id: String, on connection: SQLiteConnection) async throws -> ConnectorRecord? {
        let rows = try await connection.query(ConnectorColumns.select(jsonCast: "") + " WHERE c.connector_id = ?", [.text(id)])
        return try rows.first.map { try ConnectorRecord(row: SQLiteStoredRow(row: $0)) }
    }

    /// Binds for the 17 configuration columns, `name` through `field_mapping`.
    static func binds(_ config: ConnectorConfig, _ secrets: SealedSecrets) -> [SQLiteData] {
        func text(_ value: String?) -> SQLiteData { value.map(SQLiteData.text) ?? .null }
        return [
            .text(config.name), .text(config.connectorType.rawValue), .text(config.exchange.rawValue), .text(config.apiURL),
            .text(config.httpMethod.rawValue), text(config.requestBody?.serialized), text(config.subscriptionMessage?.serialized),
            .text(config.authType.rawValue), text(secrets.apiKey), text(secrets.apiSecret), text(secrets.passphrase),
            text(secrets.bearerToken), text(secrets.headers), text(secrets.queryParams), text(config.signing?.serialized),
            .integer(config.pollingInterval), text(config.fieldMapping?.serialized),
        ]
    }
}

struct SQLiteStoredRow: StoredRow {
    let values: [SQLiteData]

    init(row: SQLiteRow) { self.values = row.columns.map(\.data) }

    init(values: [SQLiteData]) { self.values = values }

    func string(_ column: Int) throws -> String? {
        let data = values[column]
        return data.isNull ? nil : data.string
    }

    func integer(_ column: Int) throws -> Int64? { values[column].integer.map(Int64.init) }

    func date(_ column: Int) throws -> Date? {
        guard let text = try string(column) else { return nil }
        guard let date = Timestamp.parse(text) else { throw StoreError.corrupt("timestamp \"\(text)\"") }
        return date
    }
}
