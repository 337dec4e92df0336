/// Binance spot streams, raw (`/ws/...`) or combined (`{"stream":...,"data":...}`): trade,
/// aggTrade, bookTicker, depthUpdate, kline, 24hrTicker and miniTicker.
struct BinanceNormalizer {
    func normalize(_ frame: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        var payload = frame
        var stream: String?
        if let name = frame["stream"]?.stringValue, let data = frame["data"] {
            stream = name
            payload = data
        }
        if frame["result"] != nil, frame["id"] != nil { return .control("subscription response") }
        if let code = frame["code"], let message = frame["msg"]?.stringValue {
            return .exchangeError("Binance error \(code.text ?? "?"): \(message)")
        }
        guard payload.objectValue != nil else { throw NormalizationError("Binance payload is not an object") }
        if payload["e"]?.stringValue == "serverShutdown" { return .control("serverShutdown") }
        return .messages([try message(payload, stream: stream)])
    }

    func message(_ payload: JSONValue, stream: String?) throws(NormalizationError) -> MarketMessage {
        let symbol = payload["s"]?.stringValue ?? stream.map { String($0.prefix { $0 != "@" }).uppercased() }
        let event = payload["e"]?.stringValue
        var message = MarketMessage(
            exchange: .binance,
            channel: event ?? "other",
            messageType: .other,
            instrument: symbol.map(Instruments.normalize),
            symbol: symbol,
            exchangeTimestampMs: payload["T"].int64 ?? payload["E"].int64,
            raw: payload
        )
        let id = symbol ?? "?"
        switch event {
        case .some(let kind) where kind == "trade" || kind == "aggTrade":
            let key = kind == "trade" ? "t" : "a"
            guard let tradeID = payload[key].text, let price = payload["p"].text, let quantity = payload["q"].text else {
                throw NormalizationError("Binance \(kind) without \(key), p or q")
            }
            message.messageType = .trade
            message.price = price
            message.quantity = quantity
            message.side = payload["m"]?.boolValue.map { $0 ? "sell" : "buy" }
            message.sourceID = "binance:\(kind):\(id):\(tradeID)"
            message.fields["trade_id"] = .string(tradeID)
        case "depthUpdate":
            message.messageType = .book
            message.fields = ["bids": payload["b"] ?? .array([]), "asks": payload["a"] ?? .array([])]
            message.price = payload["b"]?[0]?[0].text
            if let last = payload["u"].text { message.sourceID = "binance:depthUpdate:\(id):\(last)" }
        case "kline":
            guard let kline = payload["k"] else { throw NormalizationError("Binance kline without k") }
            message.messageType = .candle
            message.exchangeTimestampMs = kline["t"].int64
            message.price = kline["c"].text
            message.quantity = kline["v"].text
            message.fields = [
                "interval": .optional(kline["i"].text), "open": .optional(kline["o"].text), "high": .optional(kline["h"].text),
                "low": .optional(kline["l"].text), "close": .optional(kline["c"].text), "volume": .optional(kline["v"].text),
                "trade_count": kline["n"] ?? .null, "closed": kline["x"] ?? .null,
            ]
            if let start = kline["t"].text, let eventTime = payload["E"].text {
                message.sourceID = "binance:kline:\(id):\(kline["i"].text ?? "?"):\(start):\(eventTime)"
            }
        case "24hrTicker", "24hrMiniTicker":
            message.messageType = .ticker
            message.price = payload["c"].text
            message.quantity = payload["Q"].text
            message.fields = ["bid_price": .optional(payload["b"].text), "ask_price": .optional(payload["a"].text)]
        case nil where payload["b"] != nil && payload["a"] != nil && payload["u"].text != nil:
            // bookTicker has no event type and no timestamp on spot: recognized by its keys.
            message.channel = "bookTicker"
            message.messageType = .ticker
            message.price = payload["b"].text
            message.quantity = payload["B"].text
            message.fields = [
                "bid_price": .optional(payload["b"].text), "bid_size": .optional(payload["B"].text),
                "ask_price": .optional(payload["a"].text), "ask_size": .optional(payload["A"].text),
            ]
            message.sourceID = payload["u"].text.map { "binance:bookTicker:\(id):\($0)" }
        case nil where payload["lastUpdateId"] != nil:
            message.channel = "depth"
            message.messageType = .book
            message.fields = ["bids": payload["bids"] ?? .array([]), "asks": payload["asks"] ?? .array([])]
            message.price = payload["bids"]?[0]?[0].text
        default:
            message.price = payload["p"].text ?? payload["c"].text
        }
        return message
    }
}
