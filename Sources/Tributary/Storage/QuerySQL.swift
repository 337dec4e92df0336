import Foundation

/// A bound query argument, converted by each store to its own binding.
package enum QueryArgument: Sendable {
    case text(String)
    case integer(Int64)
    case date(Date)
    case null
}

/// The SQL dialect differences the read queries care about.
package enum SQLDialect: Sendable {
    case sqlite
    case postgres

    /// A NUMERIC (PostgreSQL) or TEXT (SQLite) decimal column as exact text.
    func decimal(_ column: String) -> String { self == .postgres ? "\(column)::text" : column }
    /// A JSONB (PostgreSQL) or TEXT (SQLite) column as JSON text.
    func json(_ column: String) -> String { self == .postgres ? "\(column)::text" : column }
}

/// Builds one statement: appends conditions and numbers the placeholders for the dialect.
struct QueryBuilder {
    let dialect: SQLDialect
    var conditions: [String] = []
    var arguments: [QueryArgument] = []

    init(_ dialect: SQLDialect) { self.dialect = dialect }

    mutating func bind(_ argument: QueryArgument) -> String {
        arguments.append(argument)
        return dialect == .postgres ? "$\(arguments.count)" : "?"
    }

    mutating func equals(_ column: String, _ value: String?) {
        guard let value else { return }
        conditions.append("\(column) = \(bind(.text(value)))")
    }

    /// Rows after `cursor` in newest-first `(timestamp, id)` order.
    mutating func after(_ cursor: PageCursor?) {
        guard let cursor else { return }
        // `timestamp <= t` on its own lets the (…, timestamp) indexes bound the scan; the OR alone would be a filter.
        let time = bind(.date(cursor.timestamp))
        let sameTime = bind(.date(cursor.timestamp))
        let id = bind(.integer(cursor.id))
        conditions.append("timestamp <= \(time)")
        conditions.append("(timestamp < \(sameTime) OR id < \(id))")
    }

    var whereClause: String { conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ") }
}

/// The read queries of the API, written once for both stores; each store only runs statements.
package protocol QueryableStore: ConnectorStore {
    var dialect: SQLDialect { get }
    /// The tables holding `candles_1m` rows: candles_1m itself, and where a store stages them, its staging table.
    var candleTables: [String] { get }
    func fetch(_ what: String, _ sql: String, _ arguments: [QueryArgument]) async throws -> [any StoredRow]
}

extension QueryableStore {
    /// The columns `messageRecords` reads; without `data` (NULL instead) for listings that do not show it.
    func messageColumns(data: Bool = true) -> String {
        [
            "id", "connector_id", "exchange", "instrument", "message_type", dialect.decimal("price"), dialect.decimal("quantity"), "side",
            "source_id", "session_id", "exchange_timestamp", "timestamp", data ? dialect.json("data") : "NULL",
        ].joined(separator: ", ")
    }

    func messageRecords(_ rows: [any StoredRow]) throws -> [MessageRecord] {
        try rows.map { row in
            MessageRecord(
                id: try row.integer(0) ?? 0,
                connectorID: try row.requiredString(1),
                exchange: try row.requiredString(2),
                instrument: try row.string(3),
                messageType: try row.requiredString(4),
                price: try row.string(5),
                quantity: try row.string(6),
                side: try row.string(7),
                sourceID: try row.string(8),
                sessionID: try row.string(9),
                exchangeTimestamp: try row.date(10),
                timestamp: try row.date(11) ?? Date(timeIntervalSince1970: 0),
                data: try row.json(12) ?? .null
            )
        }
    }

    public func messages(_ query: MessageQuery) async throws -> [MessageRecord] {
        let (sql, arguments) = messagesStatement(query)
        return try messageRecords(try await fetch("query messages", sql, arguments))
    }

    package func messagesStatement(_ query: MessageQuery) -> (String, [QueryArgument]) {
        var builder = QueryBuilder(dialect)
        builder.equals("exchange", query.exchange)
        builder.equals("instrument", query.instrument)
        builder.equals("connector_id", query.connectorID)
        builder.equals("message_type", query.messageType)
        if let since = query.since { builder.conditions.append("timestamp >= \(builder.bind(.date(since)))") }
        if let until = query.until { builder.conditions.append("timestamp < \(builder.bind(.date(until)))") }
        builder.after(query.after)
        let sql = "SELECT \(messageColumns()) FROM websocket_messages\(builder.whereClause) ORDER BY timestamp DESC, id DESC LIMIT \(query.limit)"
        return (sql, builder.arguments)
    }

    public func priceHistory(
        instrument: String,
        exchange: String?,
        connectorID: String?,
        since: Date,
        until: Date,
        limit: Int
    ) async throws -> [MessageRecord] {
        let (sql, arguments) = priceHistoryStatement(
            instrument: instrument,
            exchange: exchange,
            connectorID: connectorID,
            since: since,
            until: until,
            limit: limit
        )
        return try messageRecords(try await fetch("price history", sql, arguments))
    }

    package func priceHistoryStatement(
        instrument: String,
        exchange: String? = nil,
        connectorID: String? = nil,
        since: Date,
        until: Date,
        limit: Int
    ) -> (String, [QueryArgument]) {
        var builder = QueryBuilder(dialect)
        builder.equals("instrument", instrument)
        builder.equals("exchange", exchange)
        builder.equals("connector_id", connectorID)
        builder.conditions.append("price IS NOT NULL")
        builder.conditions.append("timestamp >= \(builder.bind(.date(since)))")
        builder.conditions.append("timestamp < \(builder.bind(.date(until)))")
        let sql = "SELECT \(messageColumns(data: false)) FROM websocket_messages\(builder.whereClause) ORDER BY timestamp ASC, id ASC LIMIT \(limit)"
        return (sql, builder.arguments)
    }

    /// Candles from `candles_1m` for the whole minutes of the range, and from the trades
    /// themselves for the partial minutes at its edges, merged by `CandleRollup.fold`.
    public func candles(instrument: String, exchange: String?, since: Date, until: Date, interval: CandleInterval) async throws -> [Candle] {
        let (sql, arguments) = candlesStatement(instrument: instrument, exchange: exchange, since: since, until: until)
        return try CandleRollup.fold(try await fetch("candles", sql, arguments), interval: interval)
    }

    /// Rows of (minute or trade time, open, high, low, close, volume, trade count, open time,
    /// open id, close time, close id): rows of the candle tables, and single trades at the edges.
    /// With `exchange`, that exchange's trades only (the rollup keeps each exchange's minutes).
    package func candlesStatement(instrument: String, exchange: String? = nil, since: Date, until: Date) -> (String, [QueryArgument]) {
        var builder = QueryBuilder(dialect)
        var parts: [String] = []
        func exchangeCondition() -> String { exchange.map { " AND exchange = \(builder.bind(.text($0)))" } ?? "" }
        func trades(from start: Date, to end: Date) {
            guard start < end else { return }
            let price = dialect.decimal("price")
            parts.append(
                """
                SELECT timestamp, \(price), \(price), \(price), \(price), \(dialect.decimal("quantity")), CAST(1 AS BIGINT), timestamp, id,
                    timestamp, id
                FROM websocket_messages
                WHERE instrument = \(builder.bind(.text(instrument))) AND message_type = 'trade' AND price IS NOT NULL
                    AND timestamp >= \(builder.bind(.date(start))) AND timestamp < \(builder.bind(.date(end)))\(exchangeCondition())
                """
            )
        }
        let sinceMinute = CandleRollup.minute(of: since)
        let firstWhole = sinceMinute < since ? sinceMinute.addingTimeInterval(60) : sinceMinute
        let lastWhole = CandleRollup.minute(of: until)
        if firstWhole < lastWhole {
            trades(from: since, to: firstWhole)
            let columns = ["open", "high", "low", "close", "volume"].map(dialect.decimal).joined(separator: ", ")
            for table in candleTables {
                parts.append(
                    """
                    SELECT bucket, \(columns), trade_count, open_time, open_id, close_time, close_id
                    FROM \(table)
                    WHERE instrument = \(builder.bind(.text(instrument))) AND bucket >= \(builder.bind(.date(firstWhole)))
                        AND bucket < \(builder.bind(.date(lastWhole)))\(exchangeCondition())
                    """
                )
            }
            trades(from: lastWhole, to: until)
        } else {
            trades(from: since, to: until)
        }
        return (parts.isEmpty ? "SELECT NULL WHERE 1 = 0" : parts.joined(separator: "\nUNION ALL\n"), builder.arguments)
    }

    /// The query plan of a statement (`EXPLAIN` / `EXPLAIN QUERY PLAN`), one line per row.
    package func plan(_ statement: (String, [QueryArgument])) async throws -> [String] {
        switch dialect {
        case .postgres: try await fetch("explain", "EXPLAIN " + statement.0, statement.1).compactMap { try $0.string(0) }
        case .sqlite: try await fetch("explain", "EXPLAIN QUERY PLAN " + statement.0, statement.1).compactMap { try $0.string(3) }
        }
    }

    public func apiData(connectorID: String, after: PageCursor?, limit: Int) async throws -> [APIDataRecord] {
        var builder = QueryBuilder(dialect)
        builder.equals("connector_id", connectorID)
        builder.after(after)
        let columns = [
            "id", "connector_id", dialect.json("data"), dialect.json("raw_response"), "status_code", "CAST(response_time_ms AS TEXT)",
            "source_id", "session_id", "timestamp",
        ].joined(separator: ", ")
        let sql = "SELECT \(columns) FROM api_connector_data\(builder.whereClause) ORDER BY timestamp DESC, id DESC LIMIT \(limit)"
        return try await fetch("query poll results", sql, builder.arguments).map { row in
            APIDataRecord(
                id: try row.integer(0) ?? 0,
                connectorID: try row.requiredString(1),
                data: try row.json(2) ?? .null,
                rawResponse: try row.json(3) ?? .null,
                statusCode: try row.integer(4).map(Int.init),
                responseTimeMs: try row.string(5).flatMap(Double.init),
                sourceID: try row.string(6),
                sessionID: try row.string(7),
                timestamp: try row.date(8) ?? Date(timeIntervalSince1970: 0)
            )
        }
    }

    public func batches(after: PageCursor?, limit: Int) async throws -> [BatchRow] {
        var builder = QueryBuilder(dialect)
        builder.after(after)
        let columns = ["id", "batch_id", "connector_id", "message_count", dialect.json("messages"), dialect.json("metrics"), "timestamp"]
            .joined(separator: ", ")
        let sql = "SELECT \(columns) FROM websocket_batches\(builder.whereClause) ORDER BY timestamp DESC, id DESC LIMIT \(limit)"
        return try await fetch("query batches", sql, builder.arguments).map { row in
            BatchRow(
                id: try row.integer(0) ?? 0,
                batchID: try row.requiredString(1),
                connectorID: try row.string(2),
                messageCount: Int(try row.integer(3) ?? 0),
                messages: try row.json(4) ?? .array([]),
                metrics: try row.json(5) ?? .object([:]),
                timestamp: try row.date(6) ?? Date(timeIntervalSince1970: 0)
            )
        }
    }

    public func deadLetters(connectorID: String?, after: PageCursor?, limit: Int) async throws -> [DeadLetterRecord] {
        var builder = QueryBuilder(dialect)
        builder.equals("connector_id", connectorID)
        builder.after(after)
        let columns = "id, connector_id, source_id, session_id, stage, reason, error, raw, timestamp"
        let sql = "SELECT \(columns) FROM dead_letters\(builder.whereClause) ORDER BY timestamp DESC, id DESC LIMIT \(limit)"
        return try await fetch("query dead letters", sql, builder.arguments).map { row in
            DeadLetterRecord(
                id: try row.integer(0) ?? 0,
                letter: DeadLetter(
                    connectorID: try row.requiredString(1),
                    sourceID: try row.string(2),
                    sessionID: try row.string(3),
                    stage: try row.enumValue(4, DeadLetter.Stage.self),
                    reason: try row.requiredString(5),
                    error: try row.requiredString(6),
                    raw: try row.requiredString(7),
                    timestamp: try row.date(8) ?? Date(timeIntervalSince1970: 0)
                )
            )
        }
    }

    /// One multi-row INSERT: at most 500 letters a call (9 binds each), well under both stores' bind limits.
    public func insertDeadLetters(_ letters: [DeadLetter]) async throws {
        for start in stride(from: 0, to: letters.count, by: 500) {
            var builder = QueryBuilder(dialect)
            let rows = letters[start..<min(start + 500, letters.count)].map { letter in
                let values: [QueryArgument] = [
                    .text(letter.connectorID), letter.sourceID.map(QueryArgument.text) ?? .null, letter.sessionID.map(QueryArgument.text) ?? .null,
                    .text(letter.stage.rawValue), .text(letter.reason), .text(letter.error), .text(letter.raw), .date(letter.timestamp),
                ]
                return "(" + values.map { builder.bind($0) }.joined(separator: ", ") + ")"
            }
            let sql =
                "INSERT INTO dead_letters (connector_id, source_id, session_id, stage, reason, error, raw, timestamp) VALUES "
                + rows.joined(separator: ", ")
            _ = try await fetch("store dead letters", sql, builder.arguments)
        }
    }

    /// Deletes all but the newest `keeping` dead letters; returns nothing (the count is not needed).
    public func pruneDeadLetters(keeping: Int) async throws {
        var builder = QueryBuilder(dialect)
        let offset = builder.bind(.integer(Int64(keeping)))
        _ = try await fetch(
            "prune dead letters",
            "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET \(offset))",
            builder.arguments
        )
    }

    /// One bounded delete: the ids of at most `limit` old rows, found through the `timestamp`
    /// index where the table has one, then deleted by primary key (and time: on PostgreSQL's
    /// partitioned `websocket_messages` only the partitions of old days are looked at).
    public func deleteRows(of table: RetainedTable, before cutoff: Date, limit: Int) async throws -> Int {
        var builder = QueryBuilder(dialect)
        let before = builder.bind(.date(cutoff))
        let count = builder.bind(.integer(Int64(limit)))
        // Bound again, not reused: SQLite's placeholders are positional.
        let alsoBefore = builder.bind(.date(cutoff))
        let name = table.rawValue
        let sql =
            "DELETE FROM \(name) WHERE id IN (SELECT id FROM \(name) WHERE timestamp < \(before) LIMIT \(count)) AND timestamp < \(alsoBefore) RETURNING id"
        return try await fetch("delete old rows", sql, builder.arguments).count
    }

    /// After a write whose outcome is unknown (the connection broke or timed out after the
    /// statement was sent): nil when batch `batchID` was not committed; else the id each message
    /// got in it (nil for one that was a duplicate then), from the ids its `websocket_batches` row lists.
    public func storedIDs(ofBatch batchID: String, messages: [PendingMessage]) async throws -> [Int64?]? {
        var builder = QueryBuilder(dialect)
        let sql = "SELECT \(dialect.json("messages")) FROM websocket_batches WHERE batch_id = \(builder.bind(.text(batchID)))"
        guard let row = try await fetch("find a batch", sql, builder.arguments).first else { return nil }
        let ids = (try row.json(0)?.arrayValue ?? []).compactMap { value -> Int64? in
            if case .number(let text) = value { return Int64(text) }
            return nil
        }
        var found: [PendingMessage.Identity: Int64] = [:]
        for start in stride(from: 0, to: ids.count, by: 1000) {
            // Integers read from our own table: safe to write into the statement.
            let list = ids[start..<min(start + 1000, ids.count)].map(String.init).joined(separator: ",")
            for row in try await fetch("find a batch's rows", "SELECT id, connector_id, source_id FROM websocket_messages WHERE id IN (\(list))", [])
            {
                guard let id = try row.integer(0), let connector = try row.string(1), let source = try row.string(2) else { continue }
                found[PendingMessage.Identity(connectorID: connector, sourceID: source)] = id
            }
        }
        return messages.ids(from: found)
    }
}
