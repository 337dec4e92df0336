import Foundation
import SQLiteNIO

extension SQLiteStore: QueryableStore {
    var dialect: SQLDialect { .sqlite }

    func fetch(_ what: String, _ sql: String, _ arguments: [QueryArgument]) async throws -> [any StoredRow] {
        let binds: [SQLiteData] = arguments.map { argument in
            switch argument {
            case .text(let value): .text(value)
            case .integer(let value): .integer(Int(value))
            case .date(let value): .text(Timestamp.format(value))
            }
        }
        return try await exclusive(what) { connection in
            try await connection.query(sql, binds).map { SQLiteStoredRow(row: $0) }
        }
    }

    /// SQLite keeps decimals as TEXT, so the trades of the range are read in order and folded
    /// with exact decimal arithmetic (no binary floats).
    public func candles(instrument: String, since: Date, until: Date, interval: CandleInterval) async throws -> [Candle] {
        let (sql, arguments) = candlesStatement(instrument: instrument, since: since, until: until, interval: interval)
        let rows = try await fetch("candles", sql, arguments)
        var candles: [Candle] = []
        var current: (candle: Candle, high: Decimal, low: Decimal, volume: Decimal)?
        let width = Double(interval.seconds)
        for row in rows {
            guard let time = try row.date(0), let priceText = try row.string(1), let price = DecimalText.value(priceText) else { continue }
            let quantity = DecimalText.value(try row.string(2) ?? "0") ?? 0
            let bucket = Date(timeIntervalSince1970: (time.timeIntervalSince1970 / width).rounded(.down) * width)
            if var open = current, open.candle.time == bucket {
                if price > open.high { (open.high, open.candle.high) = (price, priceText) }
                if price < open.low { (open.low, open.candle.low) = (price, priceText) }
                open.volume += quantity
                open.candle.close = priceText
                open.candle.tradeCount += 1
                current = open
            } else {
                if let done = current { candles.append(Self.finish(done)) }
                current = (
                    Candle(time: bucket, open: priceText, high: priceText, low: priceText, close: priceText, volume: "", tradeCount: 1),
                    price, price, quantity
                )
            }
        }
        if let done = current { candles.append(Self.finish(done)) }
        return candles
    }

    func candlesStatement(instrument: String, since: Date, until: Date, interval: CandleInterval) -> (String, [QueryArgument]) {
        (
            """
            SELECT timestamp, price, COALESCE(quantity, '0') FROM websocket_messages
            WHERE instrument = ? AND message_type = 'trade' AND price IS NOT NULL AND timestamp >= ? AND timestamp < ?
            ORDER BY timestamp, id
            """,
            [.text(instrument), .date(since), .date(until)]
        )
    }

    static func finish(_ open: (candle: Candle, high: Decimal, low: Decimal, volume: Decimal)) -> Candle {
        var candle = open.candle
        candle.volume = DecimalText.text(open.volume)
        return candle
    }
}
