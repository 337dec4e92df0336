import Crypto
import Foundation
import PostgresNIO
import Synchronization

extension PostgresStore {
    /// Two batches in flight on two pooled connections: one is being written while the other
    /// commits, so neither the server nor the writer waits for the other.
    public var concurrentBatchWrites: Int { 2 }

    public func runningConnectors() async throws -> [ConnectorRecord] {
        try await run("running connectors") { [logger] client in
            var records: [ConnectorRecord] = []
            let rows = try await client.query(
                PostgresQuery(unsafeSQL: Self.selectConnectors + " WHERE c.desired_state = 'running' ORDER BY c.id"),
                logger: logger
            )
            for try await row in rows { records.append(try ConnectorRecord(row: PostgresStoredRow(row: row))) }
            return records
        }
    }

    public func updateStatuses(_ updates: [StatusUpdate]) async throws {
        guard !updates.isEmpty else { return }
        let ids = updates.map(\.connectorID)
        let statuses = updates.map(\.status.rawValue)
        let errors = updates.map { $0.lastError ?? "" }
        let metrics = updates.map(\.performanceMetrics.serialized)
        _ = try await run("update statuses") { [logger] client in
            try await client.query(
                """
                UPDATE connector_status s SET status = u.status, last_error = NULLIF(u.last_error, ''),
                    performance_metrics = u.metrics::jsonb, updated_at = NOW()
                FROM UNNEST(\(ids)::text[], \(statuses)::text[], \(errors)::text[], \(metrics)::text[]) AS u(id, status, last_error, metrics)
                WHERE s.connector_id = u.id
                """,
                logger: logger
            )
        }
    }

    /// One `INSERT ... SELECT FROM UNNEST(...)` per batch: one round trip and one statement for
    /// any number of rows. Decimals travel as text and are cast to NUMERIC by the server.
    ///
    /// With several instances (`instanceID`), two more things happen in the same transaction:
    /// - **Fencing.** Messages received under a lease epoch that is no longer this instance's are
    ///   refused when they carry no exchange identity (tickers, books: a second owner reading the
    ///   same stream would store them twice). The lease rows are locked `FOR SHARE`, so a takeover
    ///   waits for this commit or this write sees the takeover. Messages with an exchange identity
    ///   (trades) are kept: the unique `(connector_id, source_id)` index already makes a second
    ///   copy impossible, and refusing them would lose trades the new owner connected too late for.
    /// - **Announcement.** The batch's row ids go out on the cluster channel on commit, for the
    ///   other instances' realtime clients.
    ///
    /// Ids are reserved from the sequence beforehand, so nothing needs to come back: a small batch
    /// is one statement (`WriteMode.oneStatement`), a large one a `COPY` and one more statement in
    /// a transaction. Either fails as a whole when it meets a row already stored, and the batch is
    /// written again with `INSERT ... ON CONFLICT DO NOTHING`, which its connectors keep using for
    /// `ConflictMemory.hold` (a reconnect that re-delivers trades, a spool read back).
    ///
    /// **Identity across days.** With `MESSAGE_PARTITIONS=daily` the table is partitioned by day
    /// (`PostgresStore+partitions`), and PostgreSQL enforces `(connector_id, source_id)` within
    /// each partition only. A row can be
    /// stored already in an earlier day's partition only if it was received again on a later day:
    /// an exchange's identity (a trade id) re-delivered after a reconnect or re-read by a poller.
    /// Such a row's exchange time lies before its day (`earlierDays`), so a batch holding one is
    /// written with `INSERT`, which first looks for it in the partitions between its exchange
    /// time and its day. Rows whose identity Tributary made (`<session_id>:<n>`) are only ever
    /// written again from the spool, with the time they were first received: the same day.
    public func insertMessages(_ messages: [PendingMessage], batch: BatchRecord) async throws -> [Int64?] {
        guard !messages.isEmpty else { return [] }
        let connectors = Set(messages.map(\.connectorID))
        let partitioned = self.partitioned.load(ordering: .relaxed)
        if !conflicts.recentlyConflicted(connectors), !partitioned || !messages.contains(where: { Self.earlierDays($0) != nil }) {
            do {
                return try await writeMessages(messages, batch: batch, mode: messages.count <= Self.oneStatementRows ? .oneStatement : .copy)
            } catch is CopyConflict {
                conflicts.conflicted(connectors)
                reservedIDs.clear()
                copyConflicts.add(1, ordering: .relaxed)
                logger.info(
                    "a batch met rows already stored: written with INSERT ... ON CONFLICT instead, for its connectors for a while",
                    metadata: ["connectors": "\(connectors.sorted().joined(separator: ","))"]
                )
            }
        }
        return try await writeMessages(messages, batch: batch, mode: .insertOnConflict)
    }

    /// A write that met a row already stored (the unique `(connector_id, source_id)` index).
    struct CopyConflict: Error {}

    /// The write procedure is missing and this role may not create it.
    struct ProcedureMissing: Error {}

    /// A unique violation on a message row (`websocket_messages` or one of its partitions, whose
    /// only unique indexes are the identity and the id): its identity, or a reserved id already
    /// used (after the sequence was reset under the reserve). Any other (a batch id) is a real error.
    static func isStoredRowConflict(_ error: PSQLError) -> Bool {
        error.serverInfo?[.sqlState] == "23505" && (error.serverInfo?[.tableName] ?? "").hasPrefix("websocket_messages")
    }

    /// How far an exchange's clock may run ahead of ours before a re-delivered trade is no
    /// longer looked for on the day before its own (see `insertMessages`).
    static let exchangeClockLead: Int64 = 60_000_000

    /// For a message with an exchange identity that may already be stored in an earlier day's
    /// partition: the times (microseconds) to look in, from its exchange time (less
    /// `exchangeClockLead`; from the first row when it has none) to the start of the day it was
    /// received. Nil when there is nothing before its own day to look at.
    static func earlierDays(_ pending: PendingMessage) -> (from: Int64, until: Int64)? {
        guard pending.message.sourceID != nil else { return nil }
        let dayStart = Timestamp.microseconds(DayPartition(containing: pending.receivedAt).day)
        let everything = (Timestamp.earliestMilliseconds * 1000, dayStart)
        // Exchange times are checked to years 0001-9999 where they enter; checked again here
        // rather than trusted, since a trap would stop the writer.
        guard let exchange = pending.message.exchangeTimestampMs, Timestamp.isValid(milliseconds: exchange) else { return everything }
        let from = exchange * 1000 - exchangeClockLead
        return from < dayStart ? (from, dayStart) : nil
    }

    /// How a batch's rows go in.
    enum WriteMode {
        /// One statement, its own transaction: the rows (with reserved ids), the candle minutes,
        /// the batch row and the announcement together; one round trip. For small batches.
        case oneStatement
        /// `COPY` with reserved ids, then the rest, in a transaction. For large batches.
        case copy
        /// `INSERT ... ON CONFLICT DO NOTHING RETURNING`, then the rest: where rows may be stored already.
        case insertOnConflict
    }

    /// Batches up to this many rows are written in one statement; larger ones with `COPY`.
    static let oneStatementRows = 200

    func writeMessages(_ messages: [PendingMessage], batch: BatchRecord, mode: WriteMode) async throws -> [Int64?] {
        let instanceID = self.instanceID
        let partitioned = self.partitioned.load(ordering: .relaxed)
        var batchMetrics = batch.metrics
        if let instanceID { batchMetrics["instance_id"] = .string(instanceID) }
        let metrics = JSONValue.object(batchMetrics).serialized
        // Only with several instances, and only connectors with rows that have no exchange identity.
        let fenceable: Set<String> =
            instanceID == nil ? [] : Set(messages.lazy.filter { $0.lease != nil && $0.message.sourceID == nil }.map(\.connectorID))
        if mode == .oneStatement, fenceable.isEmpty, let procedure = Self.writeProcedure, !writeProcedureUnavailable.load(ordering: .relaxed) {
            do {
                return try await run("insert messages") { [logger, self] client in
                    let ids = try await self.reservedIDs.take(messages.count, from: client, logger: logger)
                    var sql = BoundSQL(withText: false)
                    // Only its binds: its text is the procedure's body.
                    _ = Self.oneStatement(messages, ids: ids, batch: batch, metrics: metrics, instanceID: instanceID, into: &sql)
                    // A procedure that commits before it returns: its answer means the rows are stored
                    // (a statement's own completion reaches the client before its implicit commit).
                    let binds = sql.binds
                    let call = {
                        // On the writer's own connection when it is free, as a statement prepared
                        // once on it (no parse and no description per batch); otherwise (another
                        // write holds it, or the store has stopped) on one from the pool.
                        let written: Void? = try await self.writer.withConnection { connection in
                            _ = try await connection.execute(WriteBatchCall(binds: binds), logger: logger)
                        }
                        if written == nil { for try await _ in try await client.query(sql.query(procedure.call), logger: logger) {} }
                    }
                    do {
                        do {
                            try await call()
                        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42883" {
                            // Dropped, or a database this version never migrated: created, then called again.
                            guard try await client.withConnection({ await self.createWriteProcedure(procedure, on: $0) }) else {
                                throw ProcedureMissing()
                            }
                            try await call()
                        }
                    } catch let error as PSQLError where Self.isStoredRowConflict(error) {
                        throw CopyConflict()
                    }
                    return ids
                }
            } catch is ProcedureMissing {
                // Written below, as a large batch is.
            }
        }
        // The rows' COPY text is built before the database is asked for anything (CPU time does
        // not count against the database's timeout); the ids are added once reserved.
        let encoded = mode == .copy ? CopyRows(messages) : nil
        let copy = mode != .insertOnConflict
        return try await run("insert messages") { [logger, self] client in
            try await client.withTransaction(logger: logger) { connection in
                var writing = messages
                if let instanceID, !fenceable.isEmpty {
                    let rows = try await connection.query(
                        """
                        SELECT connector_id, epoch FROM connector_leases
                        WHERE connector_id = ANY(\(Array(fenceable))::text[]) AND owner = \(instanceID) AND expires_at > NOW() FOR SHARE
                        """,
                        logger: logger
                    )
                    var current: [String: Int64] = [:]
                    for try await (id, epoch) in rows.decode((String, Int64).self) { current[id] = epoch }
                    writing = messages.filter { $0.lease == nil || $0.message.sourceID != nil || current[$0.connectorID] == $0.lease }
                    if writing.count < messages.count {
                        self.fencedMessages.add(messages.count - writing.count, ordering: .relaxed)
                        logger.warning(
                            "refused messages received under a lease this instance no longer holds",
                            metadata: ["count": "\(messages.count - writing.count)", "error_type": "fenced"]
                        )
                    }
                }
                let messageIDs: [Int64?]
                if writing.isEmpty {
                    messageIDs = messages.map { _ in nil }
                } else if copy {
                    let newIDs = try await self.reservedIDs.take(writing.count, on: connection, logger: logger)
                    // (Fencing may have refused some: then only the others are encoded, here.)
                    let text = (writing.count == messages.count ? encoded : nil) ?? CopyRows(writing)
                    let rows = text.with(ids: newIDs)
                    do {
                        try await connection.copyFrom(table: "websocket_messages", columns: CopyRows.columns, logger: logger) { writer in
                            try await writer.write(rows)
                        }
                    } catch let error as PSQLError where Self.isStoredRowConflict(error) {
                        throw CopyConflict()
                    }
                    // COPY stored every row it was given: a row already stored, or one repeated
                    // within the batch, fails it as a conflict. So each written message has its id.
                    messageIDs = Self.ids(of: messages, writing: writing, newIDs)
                } else {
                    // One row of arrays rather than a row per message: a result streamed over many
                    // reads trips a fatal precondition in PostgresNIO's row stream when the server
                    // closes the connection meanwhile (RowStreamStateMachine, seen when PostgreSQL
                    // stopped during a write under load).
                    var sql = BoundSQL()
                    let rows = Self.messageRows(writing, ids: nil, lookingInEarlierDays: partitioned, into: &sql)
                    var ids: [PendingMessage.Identity: Int64] = [:]
                    let inserted = try await connection.query(
                        sql.query(
                            """
                            WITH inserted AS (\(rows) ON CONFLICT DO NOTHING RETURNING id, connector_id, source_id)
                            SELECT COALESCE(array_agg(id), '{}'::int8[]), COALESCE(array_agg(connector_id), '{}'::text[]),
                                COALESCE(array_agg(source_id), '{}'::text[])
                            FROM inserted
                            """
                        ),
                        logger: logger
                    )
                    for try await (newIDs, connectors, sources) in inserted.decode(([Int64], [String], [String]).self) {
                        for (index, id) in newIDs.enumerated() where index < connectors.count && index < sources.count {
                            ids[PendingMessage.Identity(connectorID: connectors[index], sourceID: sources[index])] = id
                        }
                    }
                    messageIDs = messages.ids(from: ids)
                }
                var sql = BoundSQL()
                let rest = Self.batchRows(messages, ids: messageIDs, batch: batch, metrics: metrics, instanceID: instanceID, into: &sql)
                for try await _ in try await connection.query(sql.query("WITH \(rest) SELECT count(*) FROM notified"), logger: logger) {}
                return messageIDs
            }
        }
    }

    /// The id of each of `messages` that is in `writing` (the same messages in the same order,
    /// some left out), nil for the others: `ids` are `writing`'s.
    static func ids(of messages: [PendingMessage], writing: [PendingMessage], _ ids: [Int64]) -> [Int64?] {
        var next = 0
        return messages.map { message in
            guard next < writing.count, next < ids.count, writing[next] === message else { return nil }
            defer { next += 1 }
            return ids[next]
        }
    }

    /// The `INSERT ... SELECT FROM UNNEST` of `messages`, with `ids` when reserved (else the
    /// sequence's). Times travel as whole microseconds, the same ones the candle minutes are
    /// computed from. Decimals travel as text and are cast to NUMERIC by the server.
    /// `lookingInEarlierDays` leaves out the rows already stored in an earlier day's partition
    /// (`earlierDays`); the unique index of the row's own partition takes care of its own day.
    static func messageRows(
        _ messages: [PendingMessage],
        ids: [Int64]?,
        lookingInEarlierDays: Bool = false,
        into sql: inout BoundSQL
    ) -> String {
        // Each column made at its size (`map`), not grown an append at a time.
        let connectors = messages.map(\.connectorID)
        let exchanges = messages.map(\.message.exchange.rawValue)
        let instruments = messages.map { $0.message.instrument ?? "" }
        let types = messages.map(\.message.messageType.rawValue)
        let prices = messages.map { $0.message.price ?? "" }
        let quantities = messages.map { $0.message.quantity ?? "" }
        let sides = messages.map { $0.message.side ?? "" }
        let data = messages.map(\.data)
        let sources = messages.map(\.sourceID)
        let sessions = messages.map(\.sessionID)
        let exchangeTimes = messages.map { $0.message.exchangeTimestampMs ?? -1 }
        let times = messages.map { Timestamp.microseconds($0.receivedAt) }
        // An empty range (0, 0) where there is nothing to look for.
        let ranges = lookingInEarlierDays ? messages.map(earlierDays) : []
        let lookFrom = ranges.map { $0?.from ?? 0 }
        let lookUntil = ranges.map { $0?.until ?? 0 }
        // Bound first, in the order of their placeholders: a caller that needs only the binds
        // (`BoundSQL.withText` false: the write procedure's call) gets them without the text.
        let idArray = ids.map { sql.bind($0) }
        let earlierArrays = lookingInEarlierDays ? (from: sql.bind(lookFrom), until: sql.bind(lookUntil)) : nil
        let (c, e, i, t) = (sql.bind(connectors), sql.bind(exchanges), sql.bind(instruments), sql.bind(types))
        let (p, q, s, d) = (sql.bind(prices), sql.bind(quantities), sql.bind(sides), sql.bind(data))
        let (src, ses, ets, ts) = (sql.bind(sources), sql.bind(sessions), sql.bind(exchangeTimes), sql.bind(times))
        guard sql.withText else { return "" }
        let idColumn = ids == nil ? "" : "id, "
        let idValue = ids == nil ? "" : "u.id, "
        let idName = ids == nil ? "" : "id, "
        let earlier = earlierArrays.map { ", \($0.from)::int8[], \($0.until)::int8[]" } ?? ""
        let earlierNames = lookingInEarlierDays ? ", lf, lu" : ""
        // `OFFSET 0` keeps the lookup a subplan run per row: each row's range then prunes the
        // partitions to its own days, and each is probed through its `(connector_id, source_id)`
        // index. Without it the planner may join by hashing every partition's rows.
        let lookup =
            lookingInEarlierDays
            ? """

            WHERE NOT EXISTS (SELECT 1 FROM websocket_messages o WHERE o.connector_id = u.c AND o.source_id = u.src
                AND o.timestamp >= \(fromMicroseconds("lf")) AND o.timestamp < \(fromMicroseconds("lu")) OFFSET 0)
            """ : ""
        return """
            INSERT INTO websocket_messages (\(idColumn)connector_id, exchange, instrument, message_type, price, quantity, side, data, source_id,
                session_id, exchange_timestamp, timestamp)
            SELECT \(idValue)c, e, NULLIF(i, ''), t, NULLIF(p, '')::numeric, NULLIF(q, '')::numeric, NULLIF(s, ''), d::jsonb, src, ses,
                CASE WHEN ets < 0 THEN NULL ELSE \(fromMicroseconds("ets * 1000")) END, \(fromMicroseconds("ts"))
            FROM UNNEST(\(idArray.map { "\($0)::int8[], " } ?? "")\(c)::text[], \(e)::text[], \(i)::text[],
                \(t)::text[], \(p)::text[], \(q)::text[], \(s)::text[],
                \(d)::text[], \(src)::text[], \(ses)::text[], \(ets)::int8[],
                \(ts)::int8[]\(earlier)) AS u(\(idName)c, e, i, t, p, q, s, d, src, ses, ets, ts\(earlierNames))\(lookup)
            """
    }

    /// What follows a batch's rows in its transaction, as common table expressions and the final
    /// `SELECT`: the candle minutes of the rows really inserted (`ids`, nil for a duplicate), the
    /// `websocket_batches` row, and with several instances the announcement on the cluster channel.
    static func batchRows(
        _ messages: [PendingMessage],
        ids: [Int64?],
        batch: BatchRecord,
        metrics: String,
        instanceID: String?,
        into sql: inout BoundSQL
    ) -> String {
        let written = ids.compactMap { $0 }
        let stored = JSONValue.array(written.map { .number(String($0)) }).serialized
        let announcement = instanceID.map { ClusterMessage.committed(batchID: batch.batchID, ids: written, from: $0) } ?? ""
        let d = CandleDeltaColumns(MinuteCandles(stored: messages, ids: ids))
        // Bound first, in the order of their placeholders (see `messageRows`).
        let (i, b, e, o) = (sql.bind(d.instruments), sql.bind(d.buckets), sql.bind(d.exchanges), sql.bind(d.opens))
        let (h, l, c, v) = (sql.bind(d.highs), sql.bind(d.lows), sql.bind(d.closes), sql.bind(d.volumes))
        let (n, ot, oi) = (sql.bind(d.counts), sql.bind(d.openTimes), sql.bind(d.openIDs))
        let (ct, ci) = (sql.bind(d.closeTimes), sql.bind(d.closeIDs))
        let (batchID, connectorID, count) = (sql.bind(batch.batchID), sql.bind(batch.connectorID), sql.bind(messages.count))
        let (ids, metricsJSON) = (sql.bind(stored), sql.bind(metrics))
        let (channel, payload, sent, rows) = (sql.bind(clusterChannel), sql.bind(announcement), sql.bind(announcement), sql.bind(written.count))
        guard sql.withText else { return "" }
        return """
            deltas AS (
                INSERT INTO candle_deltas (\(candleColumns))
                SELECT i, \(fromMicroseconds("b")), e, o::numeric, h::numeric, l::numeric, c::numeric, v::numeric, n,
                    \(fromMicroseconds("ot")), oi, \(fromMicroseconds("ct")), ci
                FROM UNNEST(\(i)::text[], \(b)::int8[], \(e)::text[],
                    \(o)::text[], \(h)::text[], \(l)::text[], \(c)::text[],
                    \(v)::text[], \(n)::int8[], \(ot)::int8[],
                    \(oi)::int8[], \(ct)::int8[], \(ci)::int8[])
                    AS u(i, b, e, o, h, l, c, v, n, ot, oi, ct, ci)
            ), batch AS (
                INSERT INTO websocket_batches (batch_id, connector_id, message_count, messages, metrics)
                VALUES (\(batchID), \(connectorID), \(count), \(ids)::jsonb,
                    \(metricsJSON)::jsonb)
                RETURNING 1
            ), notified AS (
                SELECT pg_notify(\(channel), \(payload)) FROM batch
                WHERE \(sent) <> '' AND \(rows) > 0
            )
            """
    }

    /// A small batch's whole write as one statement, for `writeProcedure` (ids reserved): the
    /// rows, then `batchRows`, counting the announcements into the procedure's variable.
    static func oneStatement(
        _ messages: [PendingMessage],
        ids: [Int64],
        batch: BatchRecord,
        metrics: String,
        instanceID: String?,
        into sql: inout BoundSQL
    ) -> String {
        let rows = messageRows(messages, ids: ids, into: &sql)
        let rest = batchRows(messages, ids: ids, batch: batch, metrics: metrics, instanceID: instanceID, into: &sql)
        guard sql.withText else { return "" }
        return "WITH inserted AS (\(rows) RETURNING 1), \(rest) SELECT count(*) INTO announced FROM notified"
    }

    /// `oneStatement` as a PL/pgSQL procedure that runs it and commits, so a small batch is one
    /// round trip whose answer comes after the commit. Its parameters are the statement's binds,
    /// in order (`$1`, `$2`... in the body are the procedure's parameters). The name carries a
    /// hash of the definition, so versions that write differently each call their own.
    struct WriteProcedure: Sendable {
        let name: String
        let definition: String
        /// `CALL name($1, ..., $n)`, with the binds of `oneStatement`.
        let call: String
    }

    /// `WriteProcedure.call` prepared, for the writer's own connection: PostgresNIO prepares it
    /// once per connection, under the procedure's name (so another version's procedure is its own
    /// statement), and then sends each batch's binds alone.
    struct WriteBatchCall: PostgresPreparedStatement {
        typealias Row = ()
        static var name: String { writeProcedure?.name ?? "tributary_write_batch" }
        static var sql: String { writeProcedure?.call ?? "" }
        let binds: PostgresBindings
        func makeBindings() -> PostgresBindings { binds }
        func decodeRow(_ row: PostgresRow) {}
    }

    /// Nil only if a bind had a type without a SQL name (then small batches take the `COPY` path).
    static let writeProcedure: WriteProcedure? = {
        var sql = BoundSQL()
        let statement = oneStatement(
            [],
            ids: [],
            batch: BatchRecord(batchID: "", connectorID: nil, metrics: [:]),
            metrics: "",
            instanceID: nil,
            into: &sql
        )
        let types = sql.types.compactMap(\.knownSQLName)
        guard types.count == sql.types.count else { return nil }
        let body = """
            (\(types.joined(separator: ", ")))
            LANGUAGE plpgsql AS $tributary$
            DECLARE announced bigint;
            BEGIN
                \(statement);
                COMMIT;
            END
            $tributary$
            """
        let hash = SHA256.hash(data: Data(body.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
        let name = "tributary_write_batch_\(hash)"
        let parameters = (1...max(1, types.count)).map { "$\($0)" }.joined(separator: ", ")
        return WriteProcedure(name: name, definition: "CREATE OR REPLACE PROCEDURE \(name)\(body)", call: "CALL \(name)(\(parameters))")
    }()

    /// Creates `procedure` unless it exists in the schema where it would be created (the first
    /// of the search path, where `CALL` finds it first), under the migration lock (two instances
    /// starting together would otherwise both replace it, and one fail). False when it cannot (a
    /// role that may write but not create): then small batches go with `COPY` until the next start.
    func createWriteProcedure(_ procedure: WriteProcedure, on connection: PostgresConnection) async -> Bool {
        do {
            try await Self.createWriteProcedure(procedure, on: connection, logger: logger)
            return true
        } catch {
            writeProcedureUnavailable.store(true, ordering: .relaxed)
            logger.warning(
                "could not create the batch write procedure; small batches are written with COPY until the next start",
                metadata: ["procedure": "\(procedure.name)", "error": "\(Self.translate(error))"]
            )
            return false
        }
    }

    private static func createWriteProcedure(_ procedure: WriteProcedure, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.withTransaction(logger: logger) { connection in
            _ = try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLockKey))", logger: logger)
            let rows = try await connection.query(
                "SELECT count(*) FROM pg_proc WHERE proname = \(procedure.name) AND pronamespace = current_schema()::regnamespace",
                logger: logger
            )
            for try await count in rows.decode(Int.self) where count == 0 {
                try await connection.query(PostgresQuery(unsafeSQL: procedure.definition), logger: logger)
                logger.info("created the batch write procedure", metadata: ["procedure": "\(procedure.name)"])
            }
        }
    }

    public func insertAPIData(_ row: APIDataRow) async throws -> Int64 {
        try await run("insert poll result") { [logger] client in
            let rows = try await client.query(
                """
                INSERT INTO api_connector_data (connector_id, data, raw_response, status_code, response_time_ms, source_id, session_id, timestamp)
                VALUES (\(row.connectorID), \(row.data)::jsonb, \(row.rawResponse)::jsonb, \(row.statusCode), \(row.responseTimeMs),
                    \(row.sourceID), \(row.sessionID), \(row.timestamp))
                RETURNING id
                """,
                logger: logger
            )
            for try await id in rows.decode(Int64.self) { return id }
            return 0
        }
    }

    public func messageCounts(connectorID: String) async throws -> (rows: Int, distinctSources: Int) {
        try await run("count messages") { [logger] client in
            let rows = try await client.query(
                "SELECT COUNT(*), COUNT(DISTINCT source_id) FROM websocket_messages WHERE connector_id = \(connectorID)",
                logger: logger
            )
            for try await (total, sources) in rows.decode((Int, Int).self) { return (total, sources) }
            return (0, 0)
        }
    }
}

/// One statement's text and its binds, built together (`$1`, `$2`, … in the order bound).
struct BoundSQL {
    var binds = PostgresBindings()
    /// The type of each bind, in order.
    var types: [PostgresDataType] = []
    /// False for the binds alone, of a statement whose text is known already (the write
    /// procedure's call): the functions that bind into it then skip building the text (each
    /// batch's text was built and thrown away before), and `bind` returns "".
    let withText: Bool

    init(withText: Bool = true) { self.withText = withText }

    mutating func bind<Value: PostgresDynamicTypeEncodable>(_ value: Value) -> String {
        binds.append(value)
        types.append(value.psqlType)
        return withText ? "$\(binds.count)" : ""
    }

    mutating func bind<Value: PostgresNonThrowingEncodable>(_ value: Value?) -> String {
        binds.append(value)
        types.append(Value.psqlType)
        return withText ? "$\(binds.count)" : ""
    }

    func query(_ sql: String) -> PostgresQuery { PostgresQuery(unsafeSQL: sql, binds: binds) }
}
