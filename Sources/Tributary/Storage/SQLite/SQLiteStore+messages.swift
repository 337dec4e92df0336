import Foundation
import SQLiteNIO

extension SQLiteStore {
    /// One connection: batches are written one after another.
    public var concurrentBatchWrites: Int { 1 }

    public func runningConnectors() async throws -> [ConnectorRecord] {
        try await exclusive("running connectors") { connection in
            try await connection.query(ConnectorColumns.select(jsonCast: "") + " WHERE c.desired_state = 'running' ORDER BY c.id")
                .map { try ConnectorRecord(row: SQLiteStoredRow(row: $0)) }
        }
    }

    public func updateStatuses(_ updates: [StatusUpdate]) async throws {
        guard !updates.isEmpty else { return }
        let now = Timestamp.format(Date())
        try await transaction("update statuses") { connection in
            for update in updates {
                _ = try await connection.query(
                    "UPDATE connector_status SET status = ?, last_error = ?, performance_metrics = ?, updated_at = ? WHERE connector_id = ?",
                    [
                        .text(update.status.rawValue), update.lastError.map(SQLiteData.text) ?? .null,
                        .text(update.performanceMetrics.serialized), .text(now), .text(update.connectorID),
                    ]
                )
            }
        }
    }

    /// Rows per INSERT statement: 12 binds each, well under SQLite's 32766-variable limit.
    static let rowsPerStatement = 500

    public func insertMessages(_ messages: [PendingMessage], batch: BatchRecord) async throws -> [Int64?] {
        guard !messages.isEmpty else { return [] }
        // One job on the thread pool for the whole transaction (see `SQLiteDirect`).
        return try await exclusive("insert messages") { [direct] _ in
            try await direct.run { db in
                try db.transaction("insert messages") { try Self.insert(messages, batch: batch, on: db) }
            }
        }
    }

    /// The rows (`ON CONFLICT DO NOTHING`: a re-delivered one gets no id), their candle minutes
    /// and the batch row; inside a transaction.
    static func insert(_ messages: [PendingMessage], batch: BatchRecord, on db: SQLiteDirect) throws -> [Int64?] {
        var ids: [PendingMessage.Identity: Int64] = [:]
        for start in stride(from: 0, to: messages.count, by: Self.rowsPerStatement) {
            let chunk = messages[start..<min(start + Self.rowsPerStatement, messages.count)]
            var binds: [SQLiteData] = []
            binds.reserveCapacity(chunk.count * 12)
            for pending in chunk {
                let message = pending.message
                binds.append(contentsOf: [
                    .text(pending.connectorID), .text(message.exchange.rawValue), message.instrument.map(SQLiteData.text) ?? .null,
                    .text(message.messageType.rawValue), message.price.map(SQLiteData.text) ?? .null,
                    message.quantity.map(SQLiteData.text) ?? .null, message.side.map(SQLiteData.text) ?? .null, .text(pending.data),
                    .text(pending.sourceID), .text(pending.sessionID),
                    message.exchangeTimestampMs.map { .text(Timestamp.format(Date(timeIntervalSince1970: Double($0) / 1000))) } ?? .null,
                    .text(Timestamp.format(pending.receivedAt)),
                ])
            }
            // RETURNING id, connector_id, source_id.
            for row in try db.query(Self.insertSQL(rows: chunk.count), binds) where row.count == 3 {
                if let id = row[0].integer, let connector = row[1].string, let source = row[2].string {
                    ids[PendingMessage.Identity(connectorID: connector, sourceID: source)] = Int64(id)
                }
            }
        }
        let messageIDs = messages.map { ids[$0.identity] }
        // The batch's candle minutes, from the rows really inserted (duplicates add nothing).
        try MinuteCandles(stored: messages, ids: messageIDs).merge(into: db)
        try db.query(
            "INSERT INTO websocket_batches (batch_id, connector_id, message_count, messages, metrics, timestamp) VALUES (?, ?, ?, ?, ?, ?)",
            [
                .text(batch.batchID), batch.connectorID.map(SQLiteData.text) ?? .null, .integer(messages.count),
                .text(JSONValue.array(messageIDs.compactMap { $0.map { .number(String($0)) } }).serialized),
                .text(JSONValue.object(batch.metrics).serialized), .text(Timestamp.format(Date())),
            ]
        )
        return messageIDs
    }

    /// Nothing to fold: batches write candles_1m themselves (see `MinuteCandles`).
    public func compactCandles() async throws -> Int { 0 }

    public func rebuildCandles() async throws {
        try await transaction("rebuild candles", timeout: Migrations.timeout) { [direct] _ in try await Self.rebuildCandles(on: direct) }
    }

    /// Refills `candles_1m` from every stored trade, reading them in pages by id; inside the
    /// caller's transaction (on the same connection).
    static func rebuildCandles(on direct: SQLiteDirect) async throws {
        try await direct.run { db in
            try db.query("DELETE FROM candles_1m")
            var after = 0
            while true {
                let rows = try db.query(
                    """
                    SELECT id, exchange, instrument, price, quantity, timestamp FROM websocket_messages
                    WHERE id > ? AND message_type = 'trade' AND price IS NOT NULL AND instrument IS NOT NULL ORDER BY id LIMIT 50000
                    """,
                    [.integer(after)]
                )
                guard let last = rows.last?.first?.integer else { return }
                var minutes = MinuteCandles()
                for row in rows where row.count == 6 {
                    guard let id = row[0].integer, let exchange = row[1].string, let instrument = row[2].string, let price = row[3].string,
                        let time = row[5].string.flatMap(Timestamp.parse)
                    else { continue }
                    minutes.add(
                        exchange: exchange,
                        instrument: instrument,
                        price: price,
                        quantity: row[4].string,
                        at: PartialCandle.Position(time: time, id: Int64(id))
                    )
                }
                try minutes.merge(into: db)
                after = last
            }
        }
    }

    public func insertAPIData(_ row: APIDataRow) async throws -> Int64 {
        try await exclusive("insert poll result") { connection in
            let rows = try await connection.query(
                """
                INSERT INTO api_connector_data (connector_id, data, raw_response, status_code, response_time_ms, source_id, session_id, timestamp)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id
                """,
                [
                    .text(row.connectorID), .text(row.data), .text(row.rawResponse), .integer(row.statusCode), .float(row.responseTimeMs),
                    .text(row.sourceID), .text(row.sessionID), .text(Timestamp.format(row.timestamp)),
                ]
            )
            return Int64(rows.first?.column("id")?.integer ?? 0)
        }
    }

    public func messageCounts(connectorID: String) async throws -> (rows: Int, distinctSources: Int) {
        try await exclusive("count messages") { connection in
            let row = try await connection.query(
                "SELECT COUNT(*) AS total, COUNT(DISTINCT source_id) AS sources FROM websocket_messages WHERE connector_id = ?",
                [.text(connectorID)]
            ).first
            return (row?.column("total")?.integer ?? 0, row?.column("sources")?.integer ?? 0)
        }
    }

    static func insertSQL(rows: Int) -> String {
        let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        return """
            INSERT INTO websocket_messages (connector_id, exchange, instrument, message_type, price, quantity, side, data, source_id,
                session_id, exchange_timestamp, timestamp)
            VALUES \(Array(repeating: row, count: rows).joined(separator: ", "))
            ON CONFLICT (connector_id, source_id) DO NOTHING RETURNING id, connector_id, source_id
            """
    }
}

extension MinuteCandles {
    /// Minutes merged per pair of statements (3 binds each to read, 13 to write).
    static let minutesPerStatement = 100

    /// Merges these minutes into the `candles_1m` rows already stored. SQLite keeps decimals as
    /// text, so the merge happens here with `ExactDecimal` rather than in SQL: one `SELECT` of the
    /// stored minutes and one multi-row `INSERT OR REPLACE` per `minutesPerStatement` (so two
    /// statements per batch at most rates, not two per minute; each minute count is a statement
    /// of its own in `SQLiteDirect`'s cache). Inside the caller's transaction, on its job.
    func merge(into db: SQLiteDirect) throws {
        let all = sorted
        for start in stride(from: 0, to: all.count, by: Self.minutesPerStatement) {
            let chunk = all[start..<min(start + Self.minutesPerStatement, all.count)]
            let keys = chunk.map { (instrument: $0.key.instrument, bucket: Timestamp.format($0.key.bucket), exchange: $0.key.exchange) }
            let stored = try db.query(
                """
                SELECT instrument, bucket, exchange, open, high, low, close, volume, trade_count, open_time, open_id, close_time, close_id
                FROM candles_1m WHERE \(Array(repeating: "(instrument = ? AND bucket = ? AND exchange = ?)", count: keys.count).joined(separator: " OR "))
                """,
                keys.flatMap { [SQLiteData.text($0.instrument), .text($0.bucket), .text($0.exchange)] }
            )
            var existing: [[String]: PartialCandle] = [:]
            for values in stored {
                let row = SQLiteStoredRow(values: values)
                guard let instrument = try row.string(0), let bucket = try row.string(1), let exchange = try row.string(2),
                    let candle = try PartialCandle(row: row, from: 3)
                else { continue }
                existing[[instrument, bucket, exchange]] = candle
            }
            var binds: [SQLiteData] = []
            binds.reserveCapacity(keys.count * 13)
            for (key, part) in zip(keys, chunk.map(\.value)) {
                var merged = part
                if let stored = existing[[key.instrument, key.bucket, key.exchange]] { merged.merge(stored) }
                binds += [
                    .text(key.instrument), .text(key.bucket), .text(key.exchange), .text(merged.open), .text(merged.high), .text(merged.low),
                    .text(merged.close), .text(merged.volume.description), .integer(merged.tradeCount), .text(Timestamp.format(merged.first.time)),
                    .integer(Int(merged.first.id)), .text(Timestamp.format(merged.last.time)), .integer(Int(merged.last.id)),
                ]
            }
            let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            try db.query(
                "INSERT OR REPLACE INTO candles_1m VALUES " + Array(repeating: row, count: keys.count).joined(separator: ", "),
                binds
            )
        }
    }
}
