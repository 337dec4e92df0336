import Foundation
import PostgresNIO

extension PostgresStore: QueryableStore {
    var dialect: SQLDialect { .postgres }

    func fetch(_ what: String, _ sql: String, _ arguments: [QueryArgument]) async throws -> [any StoredRow] {
        var bindings = PostgresBindings(capacity: arguments.count)
        for argument in arguments {
            switch argument {
            case .text(let value): bindings.append(value)
            case .integer(let value): bindings.append(value)
            case .date(let value): bindings.append(value)
            }
        }
        let query = PostgresQuery(unsafeSQL: sql, binds: bindings)
        return try await run(what) { [logger] client in
            var rows: [any StoredRow] = []
            for try await row in try await client.query(query, logger: logger) { rows.append(PostgresStoredRow(row: row)) }
            return rows
        }
    }

    /// Aggregated by PostgreSQL over NUMERIC: open and close are the first and last trade of each
    /// bucket by `(timestamp, id)`.
    public func candles(instrument: String, since: Date, until: Date, interval: CandleInterval) async throws -> [Candle] {
        let (sql, arguments) = candlesStatement(instrument: instrument, since: since, until: until, interval: interval)
        return try await fetch("candles", sql, arguments).map { row in
            Candle(
                time: try row.date(0) ?? since,
                open: try row.requiredString(1),
                high: try row.requiredString(2),
                low: try row.requiredString(3),
                close: try row.requiredString(4),
                volume: try row.requiredString(5),
                tradeCount: Int(try row.integer(6) ?? 0)
            )
        }
    }

    func candlesStatement(instrument: String, since: Date, until: Date, interval: CandleInterval) -> (String, [QueryArgument]) {
        let seconds = interval.seconds
        let sql = """
            SELECT to_timestamp(floor(extract(epoch FROM timestamp) / \(seconds)) * \(seconds)) AS bucket,
                ((array_agg(price ORDER BY timestamp, id))[1])::text, max(price)::text, min(price)::text,
                ((array_agg(price ORDER BY timestamp DESC, id DESC))[1])::text, COALESCE(sum(quantity), 0)::text, count(*)
            FROM websocket_messages
            WHERE instrument = $1 AND message_type = 'trade' AND price IS NOT NULL AND timestamp >= $2 AND timestamp < $3
            GROUP BY 1 ORDER BY 1
            """
        return (sql, [.text(instrument), .date(since), .date(until)])
    }
}
