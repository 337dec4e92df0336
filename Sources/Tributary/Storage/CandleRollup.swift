import Foundation

/// The OHLCV of some trades of one instrument: one trade, one exchange's minute in `candles_1m`,
/// or any merge of those. Prices keep their stored text; comparisons and the volume sum use
/// `ExactDecimal`, never binary floats. Open and close are the first and last trade by `(time, id)`.
struct PartialCandle: Sendable, Equatable {
    struct Position: Sendable, Equatable, Comparable {
        var time: Date
        var id: Int64
        static func < (a: Self, b: Self) -> Bool { (a.time, a.id) < (b.time, b.id) }
    }

    var open: String
    var high: String
    var low: String
    var close: String
    var highValue: ExactDecimal
    var lowValue: ExactDecimal
    var volume: ExactDecimal
    var tradeCount: Int
    var first: Position
    var last: Position

    mutating func merge(_ other: PartialCandle) {
        if other.first < first { (open, first) = (other.open, other.first) }
        if last < other.last { (close, last) = (other.close, other.last) }
        if other.highValue > highValue { (high, highValue) = (other.high, other.highValue) }
        if other.lowValue < lowValue { (low, lowValue) = (other.low, other.lowValue) }
        volume = volume + other.volume
        tradeCount += other.tradeCount
    }

    func candle(at time: Date) -> Candle {
        Candle(time: time, open: open, high: high, low: low, close: close, volume: volume.description, tradeCount: tradeCount)
    }
}

extension PartialCandle {
    /// One trade; nil when the price is not a decimal.
    init?(price: String, quantity: String?, at position: Position) {
        guard let value = ExactDecimal(price) else { return nil }
        self.init(
            open: price,
            high: price,
            low: price,
            close: price,
            highValue: value,
            lowValue: value,
            volume: quantity.flatMap(ExactDecimal.init) ?? .zero,
            tradeCount: 1,
            first: position,
            last: position
        )
    }

    /// A `candles_1m` row or a trade as `candlesStatement` selects them: open, high, low, close,
    /// volume, trade count, open time, open id, close time, close id from `column` on.
    init?(row: any StoredRow, from column: Int) throws {
        guard let open = try row.string(column), let high = try row.string(column + 1), let low = try row.string(column + 2),
            let close = try row.string(column + 3), let highValue = ExactDecimal(high), let lowValue = ExactDecimal(low),
            let firstTime = try row.date(column + 6), let lastTime = try row.date(column + 8)
        else { return nil }
        self.init(
            open: open,
            high: high,
            low: low,
            close: close,
            highValue: highValue,
            lowValue: lowValue,
            volume: try row.string(column + 4).flatMap(ExactDecimal.init) ?? .zero,
            tradeCount: Int(try row.integer(column + 5) ?? 0),
            first: Position(time: firstTime, id: try row.integer(column + 7) ?? 0),
            last: Position(time: lastTime, id: try row.integer(column + 9) ?? 0)
        )
    }
}

extension Dictionary where Value == PartialCandle {
    /// Adds `part` to the candle at `key`, or makes it the candle there.
    mutating func merge(_ part: PartialCandle, at key: Key) {
        if var merged = self[key] {
            merged.merge(part)
            self[key] = merged
        } else {
            self[key] = part
        }
    }
}

/// The 1-minute rollup behind the candle queries. `candles_1m` holds one row per exchange,
/// instrument and minute of stored trades, kept up to date in the same transaction as the
/// trades themselves (so re-delivered duplicates, which insert nothing, add nothing); wider
/// candles merge its minutes, and the partial minutes at the edges of a range come from the
/// trades themselves.
enum CandleRollup {
    /// The start of the `seconds`-wide UTC bucket holding `time`, taken from `time` rounded to
    /// the microsecond as the stores keep it (so a trade at 59.9999996 s belongs to the next minute
    /// in the rollup just as in the table).
    static func bucket(of time: Date, seconds: Int) -> Date {
        Date(timeIntervalSince1970: Double(Timestamp.microseconds(time).floorDivided(by: Int64(seconds) * 1_000_000) * Int64(seconds)))
    }

    static func minute(of time: Date) -> Date { bucket(of: time, seconds: 60) }

    /// Folds rows of `candlesStatement` (a minute start or trade time in column 0, then the candle
    /// columns) into `interval` candles, oldest first.
    static func fold(_ rows: [any StoredRow], interval: CandleInterval) throws -> [Candle] {
        var buckets: [Date: PartialCandle] = [:]
        for row in rows {
            guard let time = try row.date(0), let part = try PartialCandle(row: row, from: 1) else { continue }
            buckets.merge(part, at: bucket(of: time, seconds: interval.seconds))
        }
        return buckets.sorted { $0.key < $1.key }.map { $0.value.candle(at: $0.key) }
    }
}

/// Trades gathered per exchange, instrument and minute: what one batch adds to `candles_1m`
/// (or, in a rebuild, one page of stored trades). Each store then merges them in its own way.
struct MinuteCandles {
    struct Key: Hashable, Comparable {
        var instrument: String
        var bucket: Date
        var exchange: String
        static func < (a: Self, b: Self) -> Bool { (a.instrument, a.bucket, a.exchange) < (b.instrument, b.bucket, b.exchange) }
    }

    var parts: [Key: PartialCandle] = [:]

    init() {}

    /// The trades among `messages` that were stored, that is, got an id in `ids` (a re-delivered
    /// duplicate gets none and adds nothing).
    init(stored messages: [PendingMessage], ids: [Int64?]) {
        for (pending, id) in zip(messages, ids) {
            let message = pending.message
            guard let id, message.messageType == .trade, let instrument = message.instrument, let price = message.price else { continue }
            add(
                exchange: message.exchange.rawValue,
                instrument: instrument,
                price: price,
                quantity: message.quantity,
                at: PartialCandle.Position(time: pending.receivedAt, id: id)
            )
        }
    }

    mutating func add(exchange: String, instrument: String, price: String, quantity: String?, at position: PartialCandle.Position) {
        guard let trade = PartialCandle(price: price, quantity: quantity, at: position) else { return }
        parts.merge(trade, at: Key(instrument: instrument, bucket: CandleRollup.minute(of: position.time), exchange: exchange))
    }

    /// In key order, so concurrent writers touch rows in the same order.
    var sorted: [(key: Key, value: PartialCandle)] { parts.sorted { $0.key < $1.key } }
}
