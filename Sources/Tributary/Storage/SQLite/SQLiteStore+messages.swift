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
        // One job on the thread pool for the whole transaction, as for messages: every running
        // connector's status is written every few seconds.
        try await exclusive("update statuses") { [direct] _ in
            try await direct.run { db in
                try db.transaction("update statuses") {
                    for update in updates {
                        _ = try db.query(
                            "UPDATE connector_status SET status = ?, last_error = ?, performance_metrics = ?, updated_at = ? WHERE connector_id = ?",
                            [
                                .text(update.status.rawValue), update.lastError.map(SQLiteData.text) ?? .null,
                                .text(update.performanceMetrics.serialized), .text(now), .text(update.connectorID),
                            ]
                        )
                    }
                }
            }
        }
    }

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
    ///
    /// One single-row statement per row and per candle minute, prepared once and stepped again: a
    /// multi-row statement that may stop at a constraint halfway needs a statement journal (a
    /// copy of every page it changes, spilled past 64 KiB to a new temporary file in most
    /// transactions), which cost about a tenth of the server's CPU at 1,000 msg/s.
    static func insert(_ messages: [PendingMessage], batch: BatchRecord, on db: SQLiteDirect) throws -> [Int64?] {
        var messageIDs: [Int64?] = []
        messageIDs.reserveCapacity(messages.count)
        for pending in messages {
            let message = pending.message
            let id = try db.insertedRowID(
                Self.insertSQL,
                [
                    .text(pending.connectorID), .text(message.exchange.rawValue), message.instrument.map(SQLiteData.text) ?? .null,
                    .text(message.messageType.rawValue), message.price.map(SQLiteData.text) ?? .null,
                    message.quantity.map(SQLiteData.text) ?? .null, message.side.map(SQLiteData.text) ?? .null, .text(pending.data),
                    .text(pending.sourceID), .text(pending.sessionID),
                    message.exchangeTimestampMs.map { .text(Timestamp.format(Date(timeIntervalSince1970: Double($0) / 1000))) } ?? .null,
                    .text(Timestamp.format(pending.receivedAt)),
                ]
            )
            messageIDs.append(id)
        }
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

    /// One row; a row already stored inserts nothing (and gets no id).
    static let insertSQL = """
        INSERT INTO websocket_messages (connector_id, exchange, instrument, message_type, price, quantity, side, data, source_id,
            session_id, exchange_timestamp, timestamp)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (connector_id, source_id) DO NOTHING
        """
}

extension MinuteCandles {
    /// Merges these minutes into the `candles_1m` rows already stored. SQLite keeps decimals as
    /// text, so the merge happens here with `ExactDecimal` rather than in SQL: per minute, one
    /// `SELECT` of the stored row by its key and one single-row upsert (no statement journal, see
    /// `SQLiteStore.insert`), both prepared once. Inside the caller's transaction, on its job.
    func merge(into db: SQLiteDirect) throws {
        for (key, part) in sorted {
            let bucket = Timestamp.format(key.bucket)
            let keyBinds: [SQLiteData] = [.text(key.instrument), .text(bucket), .text(key.exchange)]
            var merged = part
            if let values = try db.query(Self.selectSQL, keyBinds).first,
                let stored = try PartialCandle(row: SQLiteStoredRow(values: values), from: 0)
            {
                merged.merge(stored)
            }
            try db.query(
                Self.upsertSQL,
                keyBinds + [
                    .text(merged.open), .text(merged.high), .text(merged.low), .text(merged.close), .text(merged.volume.description),
                    .integer(merged.tradeCount), .text(Timestamp.format(merged.first.time)), .integer(Int(merged.first.id)),
                    .text(Timestamp.format(merged.last.time)), .integer(Int(merged.last.id)),
                ]
            )
        }
    }

    static let selectSQL = """
        SELECT open, high, low, close, volume, trade_count, open_time, open_id, close_time, close_id
        FROM candles_1m WHERE instrument = ? AND bucket = ? AND exchange = ?
        """

    static let upsertSQL = """
        INSERT INTO candles_1m VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (instrument, bucket, exchange) DO UPDATE SET open = excluded.open, high = excluded.high, low = excluded.low,
            close = excluded.close, volume = excluded.volume, trade_count = excluded.trade_count, open_time = excluded.open_time,
            open_id = excluded.open_id, close_time = excluded.close_time, close_id = excluded.close_id
        """
}
