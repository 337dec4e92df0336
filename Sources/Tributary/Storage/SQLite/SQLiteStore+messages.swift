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
        return try await transaction("insert messages") { connection in
            var ids: [String: Int64] = [:]
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
                let rows = try await connection.query(Self.insertSQL(rows: chunk.count), binds)
                for row in rows {
                    if let id = row.column("id")?.integer, let connector = row.column("connector_id")?.string,
                        let source = row.column("source_id")?.string
                    {
                        ids[connector + "\u{0}" + source] = Int64(id)
                    }
                }
            }
            let messageIDs = messages.map { ids[$0.connectorID + "\u{0}" + $0.sourceID] }
            _ = try await connection.query(
                "INSERT INTO websocket_batches (batch_id, connector_id, message_count, messages, metrics, timestamp) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    .text(batch.batchID), batch.connectorID.map(SQLiteData.text) ?? .null, .integer(messages.count),
                    .text(JSONValue.array(messageIDs.compactMap { $0.map { .number(String($0)) } }).serialized),
                    .text(JSONValue.object(batch.metrics).serialized), .text(Timestamp.format(Date())),
                ]
            )
            return messageIDs
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
