import Foundation
import Logging
import NIOSSL
import PostgresNIO
import Synchronization

/// The production store: PostgreSQL through a `PostgresClient` pool.
///
/// The client must be running (`run()`, as a service) for queries to get connections; every call
/// is bounded by `DB_POOL_TIMEOUT` so a dead database yields 503 rather than a minute-long hang.
public final class PostgresStore: ConnectorStore {
    public let client: PostgresClient
    /// Every connection of the pool is on this executor's loop; the pool's own tasks and the
    /// cluster listener run there, and so does the batch writer (`MessageSink.eventLoop`): a
    /// write's steps then follow one another on one thread.
    let executor = EventLoopExecutor(MultiThreadedEventLoopGroup.singleton.next())
    var loop: any EventLoop { executor.eventLoop }
    public var eventLoop: (any EventLoop)? { loop }
    let inFlight = Atomic<Int>(0)
    /// With several instances: this instance's id. Writes are then fenced by lease and each
    /// committed batch is announced on the cluster channel (see `insertMessages`).
    public let instanceID: String?
    /// Messages refused because their lease epoch was no longer this instance's.
    public let fencedMessages = Atomic<Int>(0)
    /// Heartbeats sent: one per period of the cluster coordinator.
    public let heartbeats = Atomic<Int>(0)
    /// Batches whose `COPY` met a row already stored and were written with `INSERT` instead.
    public let copyConflicts = Atomic<Int>(0)
    /// Message ids reserved from the sequence for `COPY` (see `insertMessages`).
    let reservedIDs = ReservedIDs()
    /// Set once the write procedure could not be created (a role without `CREATE`): small
    /// batches then go with `COPY` until the next start.
    let writeProcedureUnavailable = Atomic<Bool>(false)
    let conflicts = ConflictMemory()
    /// `MESSAGE_PARTITIONS=daily`: `migrate` makes `websocket_messages` partitioned by day.
    let partitionByDay: Bool
    /// Whether `websocket_messages` is partitioned (by this instance or another), as `migrate`
    /// found it: writes then look for re-delivered trades in earlier days (see `insertMessages`).
    let partitioned = Atomic<Bool>(false)
    /// The connection small batches are written on, outside the pool (see `WriterConnection`).
    let writer: WriterConnection
    let timeout: Duration
    let logger: Logger

    /// The advisory lock key that serializes migrations across processes ("tribmigr").
    static let migrationLockKey: Int64 = 0x7472_6962_6D69_6772

    public init(
        settings: PostgresSettings,
        poolMaximum: Int,
        timeout: Duration,
        instanceID: String? = nil,
        partitionByDay: Bool = false,
        logger: Logger
    ) {
        self.instanceID = instanceID
        self.partitionByDay = partitionByDay
        var configuration = PostgresClient.Configuration(
            host: settings.host,
            port: settings.port,
            username: settings.username,
            password: settings.password,
            database: settings.database,
            tls: Self.tls(settings.tls)
        )
        // `DB_POOL_MIN` is validated but not handed to the pool: with a minimum above 0, PostgresNIO's
        // pool traps (`precondition(minimumConcurrentConnections <= stats.active)` in
        // PoolStateMachine+ConnectionGroup.swift) when a lease arrives while the database is away
        // and its connections are gone — a fault run crashed the server that way. Connections
        // open on demand instead (the first requests after a start pay one connect each).
        configuration.options.minimumConnections = 0
        // No keep-alive query: every connection is a demand connection, closed after 60 s idle, so
        // keep-alive (at 30 s) could only ping one idle between 30 and 60 s. What it cost was a
        // timer per connection given back to the pool (a task group of two tasks and a sleep on
        // Dispatch's timer thread, cancelled by the next lease): one more every batch.
        configuration.options.keepAliveBehavior = nil
        configuration.options.maximumConnections = poolMaximum
        configuration.options.connectTimeout = timeout
        self.client = PostgresClient(configuration: configuration, eventLoopGroup: executor.eventLoop, backgroundLogger: logger)
        self.writer = WriterConnection(
            configuration: Self.writerConfiguration(settings, connectTimeout: timeout),
            eventLoop: executor.eventLoop,
            logger: logger
        )
        self.timeout = timeout
        self.logger = logger
    }

    /// Calls holding or waiting for a pooled connection.
    public var operationsInFlight: Int { inFlight.load(ordering: .relaxed) }

    static func tls(_ mode: PostgresSettings.TLSMode) -> PostgresClient.Configuration.TLS {
        guard let tls = tlsConfiguration(mode) else { return .disable }
        return tls.required ? .require(tls.configuration) : .prefer(tls.configuration)
    }

    /// TLS for `mode` (nil: none), and whether the connection fails without it.
    static func tlsConfiguration(_ mode: PostgresSettings.TLSMode) -> (configuration: TLSConfiguration, required: Bool)? {
        var unverified = TLSConfiguration.makeClientConfiguration()
        unverified.certificateVerification = .none
        switch mode {
        case .disable: return nil
        case .prefer: return (unverified, false)
        case .require: return (unverified, true)
        case .verifyFull: return (.makeClientConfiguration(), true)
        }
    }

    /// The pool's connection settings for the writer's own connection; nil (the pool for every
    /// write) if its TLS context cannot be made.
    static func writerConfiguration(_ settings: PostgresSettings, connectTimeout: Duration) -> PostgresConnection.Configuration? {
        let tls: PostgresConnection.Configuration.TLS
        if let wanted = tlsConfiguration(settings.tls) {
            guard let context = try? NIOSSLContext(configuration: wanted.configuration) else { return nil }
            tls = wanted.required ? .require(context) : .prefer(context)
        } else {
            tls = .disable
        }
        var configuration = PostgresConnection.Configuration(
            host: settings.host,
            port: settings.port,
            username: settings.username,
            password: settings.password,
            database: settings.database,
            tls: tls
        )
        configuration.options.connectTimeout = TimeAmount(connectTimeout)
        return configuration
    }

    /// Runs `body` within the timeout (the store's, unless given), mapping connection failures to `StoreError.unavailable`.
    package func run<Value: Sendable>(
        _ what: String,
        timeout: Duration? = nil,
        _ body: @escaping @Sendable (PostgresClient) async throws -> Value
    ) async throws -> Value {
        inFlight.add(1, ordering: .relaxed)
        defer { inFlight.subtract(1, ordering: .relaxed) }
        do {
            return try await withDeadline(timeout ?? self.timeout, what) { [client] in try await body(client) }
        } catch {
            throw Self.translate(error)
        }
    }

    /// PostgresNIO's errors as `StoreError`s (see the other `translate`); others as they are.
    static func translate(_ error: any Error) -> any Error {
        switch error {
        case let error as PSQLError: return translate(error)
        case let error as PostgresTransactionError:
            // The first failure inside the transaction is the meaningful one.
            let cause = error.beginError ?? error.closureError ?? error.commitError ?? error
            return (cause as? PSQLError).map(translate) ?? cause
        default: return error
        }
    }

    /// Sorts PostgreSQL's errors into what may pass (`unavailable`: the connection, resources,
    /// shutdown, serialization and deadlocks, a lock timeout) and what the same statement will
    /// always meet again (`rejected`: data exceptions `22`, constraints `23`, program limits `54`,
    /// and anything else the server refused). Both carry the SQLSTATE and the server's message.
    static func translate(_ error: PSQLError) -> any Error {
        guard let sqlState = error.serverInfo?[.sqlState] else {
            return StoreError.unavailable("\(error.code)")
        }
        let message = error.serverInfo?[.message].map { ": \($0.prefix(300))" } ?? ""
        switch sqlState {
        case "23505" where error.serverInfo?[.constraintName] == "api_connectors_name_key": return StoreError.duplicateName
        // connection exceptions, insufficient resources, operator intervention (shutdown), unknown
        // database, transaction rollbacks (serialization failure, deadlock), lock not available, system errors
        case let state
        where ["08", "53", "57", "40", "58"].contains(where: state.hasPrefix) || state == "3D000" || state == "55P03":
            return StoreError.unavailable("SQLSTATE \(state)\(message)")
        default:
            return StoreError.rejected("SQLSTATE \(sqlState)\(message)")
        }
    }

    public func migrate() async throws {
        try await run("migrate", timeout: Migrations.timeout) { [logger, self] client in
            try await client.withConnection { connection in
                _ = try await connection.query("SELECT pg_advisory_lock(\(Self.migrationLockKey))", logger: logger)
                do {
                    try await Self.applyMigrations(on: connection, logger: logger)
                    if let procedure = Self.writeProcedure { _ = await self.createWriteProcedure(procedure, on: connection) }
                } catch {
                    _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.migrationLockKey))", logger: logger)
                    throw error
                }
                _ = try await connection.query("SELECT pg_advisory_unlock(\(Self.migrationLockKey))", logger: logger)
            }
        }
        if partitionByDay { try await partitionMessagesByDay() }
        partitioned.store(try await isPartitioned(), ordering: .relaxed)
        // Today's partition and the next days', before anything is written (see
        // PostgresStore+partitions). Without them rows go to the default partition, so a failure
        // here is logged, not a failed start; the hourly maintenance tries again.
        do {
            try await preparePartitions(now: Date())
        } catch {
            logger.warning("could not prepare the next days' partitions; trying again in an hour", metadata: ["error": "\(error)"])
        }
    }

    static func applyMigrations(on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())
            """,
            logger: logger
        )
        var applied = Set<Int>()
        for try await version in try await connection.query("SELECT version FROM schema_migrations", logger: logger).decode(Int.self) {
            applied.insert(version)
        }
        for migration in Migrations.all where !applied.contains(migration.version) {
            try await connection.withTransaction(logger: logger) { connection in
                for statement in migration.postgres {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                if migration.rebuildsCandles { try await rebuildCandles(on: connection, logger: logger) }
                try await connection.query(
                    "INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                    logger: logger
                )
            }
            logger.info("applied migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
        }
    }

    public func checkReady() async throws {
        let version = try await run("readiness check") { [logger] client in
            let rows = try await client.query("SELECT MAX(version) FROM schema_migrations", logger: logger)
            for try await version in rows.decode(Int?.self) { return version }
            return nil
        }
        guard version == Migrations.latestVersion else {
            throw StoreError.unavailable("schema at version \(version ?? 0), expected \(Migrations.latestVersion)")
        }
    }

    static let selectConnectors = ConnectorColumns.select(jsonCast: "::text")

    public func insertConnector(_ connector: NewConnector) async throws -> ConnectorRecord {
        let config = connector.config
        let secrets = connector.sealedSecrets
        return try await run("insert connector") { [logger] client in
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query(
                    """
                    INSERT INTO api_connectors (connector_id, name, connector_type, exchange, api_url, http_method, request_body,
                        subscription_message, auth_type, api_key, api_secret, passphrase, bearer_token, headers, query_params, signing,
                        polling_interval, field_mapping, desired_state, demo)
                    VALUES (\(connector.connectorID), \(config.name), \(config.connectorType.rawValue), \(config.exchange.rawValue),
                        \(config.apiURL), \(config.httpMethod.rawValue), \(config.requestBody?.serialized)::jsonb,
                        \(config.subscriptionMessage?.serialized)::jsonb, \(config.authType.rawValue), \(secrets.apiKey),
                        \(secrets.apiSecret), \(secrets.passphrase), \(secrets.bearerToken), \(secrets.headers), \(secrets.queryParams),
                        \(config.signing?.serialized)::jsonb, \(config.pollingInterval), \(config.fieldMapping?.serialized)::jsonb, 'stopped', \(connector.demo))
                    """,
                    logger: logger
                )
                try await connection.query(
                    "INSERT INTO connector_status (connector_id, status) VALUES (\(connector.connectorID), 'stopped')",
                    logger: logger
                )
                guard let record = try await Self.fetch(connector.connectorID, on: connection, logger: logger) else {
                    throw StoreError.corrupt("connector \(connector.connectorID) vanished inside its insert")
                }
                return record
            }
        }
    }

    public func listConnectors(limit: Int, offset: Int) async throws -> (connectors: [ConnectorRecord], total: Int) {
        try await run("list connectors") { [logger] client in
            let rows = try await client.query(
                PostgresQuery(unsafeSQL: Self.selectConnectors + " ORDER BY c.id LIMIT $1 OFFSET $2", binds: try Self.binds(limit, offset)),
                logger: logger
            )
            var connectors: [ConnectorRecord] = []
            for try await row in rows { connectors.append(try ConnectorRecord(row: PostgresStoredRow(row: row))) }
            var total = 0
            for try await count in try await client.query("SELECT COUNT(*) FROM api_connectors", logger: logger).decode(Int.self) {
                total = count
            }
            return (connectors, total)
        }
    }

    public func connector(id: String) async throws -> ConnectorRecord? {
        try await run("get connector") { [logger] client in
            try await client.withConnection { connection in try await Self.fetch(id, on: connection, logger: logger) }
        }
    }

    public func updateConnector(id: String, config: ConnectorConfig, sealedSecrets secrets: SealedSecrets) async throws -> ConnectorRecord? {
        try await run("update connector") { [logger] client in
            try await client.withConnection { connection in
                try await connection.query(
                    """
                    UPDATE api_connectors SET name = \(config.name), connector_type = \(config.connectorType.rawValue),
                        exchange = \(config.exchange.rawValue), api_url = \(config.apiURL), http_method = \(config.httpMethod.rawValue),
                        request_body = \(config.requestBody?.serialized)::jsonb,
                        subscription_message = \(config.subscriptionMessage?.serialized)::jsonb, auth_type = \(config.authType.rawValue),
                        api_key = \(secrets.apiKey), api_secret = \(secrets.apiSecret), passphrase = \(secrets.passphrase),
                        bearer_token = \(secrets.bearerToken), headers = \(secrets.headers), query_params = \(secrets.queryParams),
                        signing = \(config.signing?.serialized)::jsonb, polling_interval = \(config.pollingInterval),
                        field_mapping = \(config.fieldMapping?.serialized)::jsonb, updated_at = NOW()
                    WHERE connector_id = \(id)
                    """,
                    logger: logger
                )
                return try await Self.fetch(id, on: connection, logger: logger)
            }
        }
    }

    public func deleteConnector(id: String) async throws -> Bool {
        try await run("delete connector") { [logger] client in
            let rows = try await client.query("DELETE FROM api_connectors WHERE connector_id = \(id) RETURNING id", logger: logger)
            for try await _ in rows { return true }
            return false
        }
    }

    public func setState(id: String, desired: DesiredState, status: ConnectorState, restarted: Bool) async throws -> ConnectorRecord? {
        try await run("set connector state") { [logger] client in
            try await client.withTransaction(logger: logger) { connection in
                let updated = try await connection.query(
                    "UPDATE api_connectors SET desired_state = \(desired.rawValue), updated_at = NOW() WHERE connector_id = \(id) RETURNING id",
                    logger: logger
                )
                var found = false
                for try await _ in updated { found = true }
                guard found else { return nil }
                try await connection.query(
                    """
                    INSERT INTO connector_status (connector_id, status, started_at, updated_at)
                    VALUES (\(id), \(status.rawValue), CASE WHEN \(restarted) THEN NOW() END, NOW())
                    ON CONFLICT (connector_id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at,
                        started_at = CASE WHEN \(restarted) THEN EXCLUDED.started_at ELSE connector_status.started_at END
                    """,
                    logger: logger
                )
                return try await Self.fetch(id, on: connection, logger: logger)
            }
        }
    }

    /// Runs the connection pool until shutdown.
    public func run() async throws {
        // The pool's own tasks (leases, releases, their timers) run on the connections' loop too.
        await EventLoopExecutor.prefer(executor) { await client.run() }
        writer.close()
    }

    static func fetch(_ id: String, on connection: PostgresConnection, logger: Logger) async throws -> ConnectorRecord? {
        let rows = try await connection.query(
            PostgresQuery(unsafeSQL: selectConnectors + " WHERE c.connector_id = $1", binds: try binds(id)),
            logger: logger
        )
        for try await row in rows { return try ConnectorRecord(row: PostgresStoredRow(row: row)) }
        return nil
    }

    static func binds(_ values: any PostgresEncodable & Sendable...) throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: values.count)
        for value in values { try bindings.append(value) }
        return bindings
    }
}

struct PostgresStoredRow: StoredRow {
    let row: PostgresRandomAccessRow

    init(row: PostgresRow) { self.row = row.makeRandomAccess() }

    func string(_ column: Int) throws -> String? { try row[column].decode(String?.self) }
    func integer(_ column: Int) throws -> Int64? { try row[column].decode(Int64?.self) }
    func date(_ column: Int) throws -> Date? { try row[column].decode(Date?.self) }
}
