/// Bybit v5 public channels: publicTrade and tickers (snapshot and delta).
struct BybitNormalizer {
    func normalize(_ frame: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        if let operation = frame["op"]?.stringValue {
            if frame["success"]?.boolValue == false {
                return .exchangeError("Bybit \(operation) failed: \(frame["ret_msg"]?.stringValue ?? "")")
            }
            return .control(operation)
        }
        guard let topic = frame["topic"]?.stringValue, let data = frame["data"] else {
            throw NormalizationError("Bybit frame without topic and data")
        }
        let channel = String(topic.prefix { $0 != "." })
        let topicSymbol = topic.split(separator: ".").last.map(String.init)
        switch channel {
        case "publicTrade":
            guard let trades = data.arrayValue else { throw NormalizationError("Bybit publicTrade data is not a list") }
            var collector = RecordCollector(capacity: trades.count)
            for trade in trades {
                collector.add(trade) { () throws(NormalizationError) in
                    guard let id = trade["i"].text, let price = trade["p"].text, let size = trade["v"].text else {
                        throw NormalizationError("Bybit trade without i, p or v")
                    }
                    let symbol = trade["s"]?.stringValue ?? topicSymbol
                    return MarketMessage(
                        exchange: .bybit,
                        channel: channel,
                        messageType: .trade,
                        instrument: symbol.map(Instruments.normalize),
                        symbol: symbol,
                        price: price,
                        quantity: size,
                        side: trade["S"]?.stringValue?.lowercased(),
                        sourceID: "bybit:publicTrade:\(symbol ?? "?"):\(id)",
                        exchangeTimestampMs: trade["T"].int64,
                        fields: ["trade_id": .string(id)],
                        raw: trade
                    )
                }
            }
            return try collector.frame()
        case "tickers":
            let symbol = data["symbol"]?.stringValue ?? topicSymbol
            return .messages([
                MarketMessage(
                    exchange: .bybit,
                    channel: channel,
                    messageType: .ticker,
                    instrument: symbol.map(Instruments.normalize),
                    symbol: symbol,
                    price: data["lastPrice"].text,
                    exchangeTimestampMs: frame["ts"].int64,
                    fields: [
                        "bid_price": .optional(data["bid1Price"].text), "ask_price": .optional(data["ask1Price"].text),
                        "update": .optional(frame["type"]?.stringValue),
                    ],
                    raw: data
                )
            ])
        default:
            return .messages([
                MarketMessage(
                    exchange: .bybit,
                    channel: channel,
                    messageType: channel == "orderbook" ? .book : .other,
                    instrument: topicSymbol.map(Instruments.normalize),
                    symbol: topicSymbol,
                    exchangeTimestampMs: frame["ts"].int64,
                    raw: data
                )
            ])
        }
    }
}
