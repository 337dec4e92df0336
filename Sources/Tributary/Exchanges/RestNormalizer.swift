/// Normalizes a REST poll response into market messages: OKX `/api/v5/market/ticker(s)`,
/// `/trades`, `/books`, `/candles`; Binance `/api/v3/ticker/price`, `/ticker/bookTicker`,
/// `/ticker/24hr`, `/trades`; anything else through `field_mapping` and the generic fallbacks.
/// A response holding many records (a list of trades or tickers) yields one message per record,
/// with the same stable `source_id`s the streams use, so re-polling does not duplicate them.
public struct RestNormalizer: Sendable {
    let exchange: Exchange
    /// The request path (`/api/v5/market/trades`), which says what the records are.
    let path: String
    /// The request's query parameters (Binance trade records do not name their symbol).
    let query: [String: String]
    let fieldMapping: JSONValue?

    public init(exchange: Exchange, path: String, query: [String: String] = [:], fieldMapping: JSONValue? = nil) {
        self.exchange = exchange
        self.path = path
        self.query = query
        self.fieldMapping = fieldMapping
    }

    public func normalize(_ response: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        if fieldMapping == nil || fieldMapping == .null {
            switch exchange {
            case .okx: return try okx(response)
            case .binance: return try binance(response)
            default: break
            }
        }
        if let records = response.arrayValue {
            var collector = RecordCollector(capacity: records.count)
            let normalizer = CustomNormalizer(fieldMapping: fieldMapping)
            for record in records {
                collector.add(record, frame: { () throws(NormalizationError) in try normalizer.normalize(record) })
            }
            return try collector.frame()
        }
        return try CustomNormalizer(fieldMapping: fieldMapping).normalize(response)
    }

    func okx(_ response: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        if let code = response["code"].text, code != "0" {
            return .exchangeError("OKX error \(code): \(response["msg"]?.stringValue ?? "")")
        }
        guard let records = response["data"]?.arrayValue else { throw NormalizationError("OKX response without data") }
        let channel: String
        if path.hasSuffix("/trades") || path.hasSuffix("/history-trades") {
            channel = "trades"
        } else if path.hasSuffix("/ticker") || path.hasSuffix("/tickers") {
            channel = "tickers"
        } else if path.hasSuffix("/books") || path.hasSuffix("/books-full") {
            channel = "books"
        } else if path.hasSuffix("/candles") || path.hasSuffix("/history-candles") {
            channel = "candle" + (query["bar"] ?? "1m")
        } else {
            channel = records.first?["tradeId"] != nil ? "trades" : "tickers"
        }
        var collector = RecordCollector(capacity: records.count)
        for record in records {
            collector.add(record) { () throws(NormalizationError) in
                try OKXNormalizer().message(channel: channel, instID: query["instId"], action: nil, record: record)
            }
        }
        return try collector.frame()
    }

    func binance(_ response: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        if let code = response["code"], let message = response["msg"]?.stringValue {
            return .exchangeError("Binance error \(code.text ?? "?"): \(message)")
        }
        guard let records = response.arrayValue else { return .messages([try binanceRecord(response)]) }
        var collector = RecordCollector(capacity: records.count)
        for record in records {
            collector.add(record) { () throws(NormalizationError) in try binanceRecord(record) }
        }
        return try collector.frame()
    }

    /// One Binance REST record: a trade, a book ticker, a 24 h ticker or a price.
    func binanceRecord(_ record: JSONValue) throws(NormalizationError) -> MarketMessage {
        guard record.objectValue != nil else { throw NormalizationError("Binance record is not an object") }
        let symbol = record["symbol"]?.stringValue ?? query["symbol"]
        var message = MarketMessage(
            exchange: .binance,
            channel: String(path.split(separator: "/").last ?? "rest"),
            messageType: .ticker,
            instrument: symbol.map(Instruments.normalize),
            symbol: symbol,
            exchangeTimestampMs: record["time"].int64 ?? record["closeTime"].int64,
            raw: record
        )
        if path.hasSuffix("/trades") || path.hasSuffix("/historicalTrades") {
            guard let id = record["id"].text, let price = record["price"].text, let quantity = record["qty"].text else {
                throw NormalizationError("Binance trade without id, price or qty")
            }
            message.channel = "trade"
            message.messageType = .trade
            message.price = price
            message.quantity = quantity
            message.side = record["isBuyerMaker"]?.boolValue.map { $0 ? "sell" : "buy" }
            message.sourceID = "binance:trade:\(symbol ?? "?"):\(id)"
            message.fields["trade_id"] = .string(id)
        } else if record["bidPrice"] != nil, record["lastPrice"] == nil {
            message.channel = "bookTicker"
            message.price = record["bidPrice"].text
            message.quantity = record["bidQty"].text
            message.fields = [
                "bid_price": .optional(record["bidPrice"].text), "bid_size": .optional(record["bidQty"].text),
                "ask_price": .optional(record["askPrice"].text), "ask_size": .optional(record["askQty"].text),
            ]
        } else if let last = record["lastPrice"].text {
            message.price = last
            message.quantity = record["lastQty"].text
            message.fields = ["bid_price": .optional(record["bidPrice"].text), "ask_price": .optional(record["askPrice"].text)]
        } else if let price = record["price"].text {
            message.price = price
        } else {
            throw NormalizationError("Binance record without price; set field_mapping")
        }
        return message
    }
}
