/// Coinbase Exchange (`ticker`, `match`/`last_match`, `heartbeat`) and Advanced Trade
/// (`ticker`, `market_trades`, `heartbeats` channels).
struct CoinbaseNormalizer {
    func normalize(_ frame: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        if let channel = frame["channel"]?.stringValue, let events = frame["events"]?.arrayValue {
            return try advancedTrade(channel: channel, events: events, frame: frame)
        }
        guard let type = frame["type"]?.stringValue else { throw NormalizationError("Coinbase frame without type") }
        let symbol = frame["product_id"]?.stringValue
        let timestamp = frame["time"]?.stringValue.flatMap(Timestamp.parseMilliseconds)
        switch type {
        case "error":
            return .exchangeError("Coinbase error: \(frame["message"]?.stringValue ?? "")\(frame["reason"]?.stringValue.map { " (\($0))" } ?? "")")
        case "ticker":
            var message = MarketMessage(
                exchange: .coinbase,
                channel: type,
                messageType: .ticker,
                instrument: symbol.map(Instruments.normalize),
                symbol: symbol,
                price: frame["price"].text,
                quantity: frame["last_size"].text,
                side: frame["side"]?.stringValue,
                exchangeTimestampMs: timestamp,
                fields: ["bid_price": .optional(frame["best_bid"].text), "ask_price": .optional(frame["best_ask"].text)],
                raw: frame
            )
            if let sequence = frame["sequence"].text { message.sourceID = "coinbase:ticker:\(symbol ?? "?"):\(sequence)" }
            return .messages([message])
        case "match", "last_match":
            guard let tradeID = frame["trade_id"].text, let price = frame["price"].text, let size = frame["size"].text else {
                throw NormalizationError("Coinbase match without trade_id, price or size")
            }
            // A match's side is the maker's; the taker took the other side.
            let makerSide = frame["side"]?.stringValue
            return .messages([
                MarketMessage(
                    exchange: .coinbase,
                    channel: "match",
                    messageType: .trade,
                    instrument: symbol.map(Instruments.normalize),
                    symbol: symbol,
                    price: price,
                    quantity: size,
                    side: makerSide.map { $0 == "buy" ? "sell" : "buy" },
                    sourceID: "coinbase:match:\(symbol ?? "?"):\(tradeID)",
                    exchangeTimestampMs: timestamp,
                    fields: ["trade_id": .string(tradeID)],
                    raw: frame
                )
            ])
        default:
            return .control(type)
        }
    }

    func advancedTrade(channel: String, events: [JSONValue], frame: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        var messages: [MarketMessage] = []
        switch channel {
        case "market_trades":
            var collector = RecordCollector()
            for trade in events.flatMap({ $0["trades"]?.arrayValue ?? [] }) {
                collector.add(trade) { () throws(NormalizationError) in
                    guard let tradeID = trade["trade_id"].text, let price = trade["price"].text, let size = trade["size"].text else {
                        throw NormalizationError("Coinbase trade without trade_id, price or size")
                    }
                    let symbol = trade["product_id"]?.stringValue
                    return MarketMessage(
                        exchange: .coinbase,
                        channel: channel,
                        messageType: .trade,
                        instrument: symbol.map(Instruments.normalize),
                        symbol: symbol,
                        price: price,
                        quantity: size,
                        side: trade["side"]?.stringValue?.lowercased(),
                        sourceID: "coinbase:market_trades:\(symbol ?? "?"):\(tradeID)",
                        exchangeTimestampMs: trade["time"]?.stringValue.flatMap(Timestamp.parseMilliseconds),
                        fields: ["trade_id": .string(tradeID)],
                        raw: trade
                    )
                }
            }
            if !collector.malformed.isEmpty { return try collector.frame() }
            messages = collector.messages
        case "ticker", "ticker_batch":
            for ticker in events.flatMap({ $0["tickers"]?.arrayValue ?? [] }) {
                let symbol = ticker["product_id"]?.stringValue
                messages.append(
                    MarketMessage(
                        exchange: .coinbase,
                        channel: channel,
                        messageType: .ticker,
                        instrument: symbol.map(Instruments.normalize),
                        symbol: symbol,
                        price: ticker["price"].text,
                        exchangeTimestampMs: frame["timestamp"]?.stringValue.flatMap(Timestamp.parseMilliseconds),
                        fields: ["bid_price": .optional(ticker["best_bid"].text), "ask_price": .optional(ticker["best_ask"].text)],
                        raw: ticker
                    )
                )
            }
        default:
            return .control(channel)
        }
        return .messages(messages)
    }
}
