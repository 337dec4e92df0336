/// OKX v5 public channels: trades, tickers, books (all depths and bbo-tbt) and candles.
struct OKXNormalizer {
    func normalize(_ frame: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        if let event = frame["event"]?.stringValue {
            if event == "error" {
                return .exchangeError("OKX error \(frame["code"].text ?? "?"): \(frame["msg"]?.stringValue ?? "")")
            }
            return .control(event)
        }
        guard let channel = frame["arg"]?["channel"]?.stringValue, let records = frame["data"]?.arrayValue else {
            throw NormalizationError("OKX frame without arg.channel and data")
        }
        let instID = frame["arg"]?["instId"]?.stringValue
        var collector = RecordCollector(capacity: records.count)
        let action = frame["action"]?.stringValue
        for record in records {
            collector.add(record) { () throws(NormalizationError) in try message(channel: channel, instID: instID, action: action, record: record) }
        }
        return try collector.frame()
    }

    func message(channel: String, instID: String?, action: String?, record: JSONValue) throws(NormalizationError) -> MarketMessage {
        let symbol = record["instId"]?.stringValue ?? instID
        var message = MarketMessage(
            exchange: .okx,
            channel: channel,
            messageType: .other,
            instrument: symbol.map(Instruments.normalize),
            symbol: symbol,
            exchangeTimestampMs: record["ts"].int64,
            raw: record
        )
        switch channel {
        case "trades", "trades-all":
            guard let tradeID = record["tradeId"].text, let price = record["px"].text, let size = record["sz"].text else {
                throw NormalizationError("OKX trade without tradeId, px or sz")
            }
            message.messageType = .trade
            message.price = price
            message.quantity = size
            message.side = record["side"]?.stringValue?.lowercased()
            message.sourceID = "okx:trades:\(symbol ?? "?"):\(tradeID)"
            message.fields["trade_id"] = .string(tradeID)
        case "tickers":
            message.messageType = .ticker
            message.price = record["last"].text
            message.quantity = record["lastSz"].text
            message.fields = [
                "bid_price": .optional(record["bidPx"].text), "bid_size": .optional(record["bidSz"].text),
                "ask_price": .optional(record["askPx"].text), "ask_size": .optional(record["askSz"].text),
            ]
            if let ts = message.exchangeTimestampMs { message.sourceID = "okx:tickers:\(symbol ?? "?"):\(ts)" }
        case let book where book.hasPrefix("books") || book == "bbo-tbt":
            message.messageType = .book
            let bids = record["bids"]?.arrayValue ?? []
            let asks = record["asks"]?.arrayValue ?? []
            message.price = bids.first?[0].text
            message.fields = ["action": .optional(action), "bids": .array(bids), "asks": .array(asks)]
            if let seq = record["seqId"].int64 { message.sourceID = "okx:\(channel):\(symbol ?? "?"):\(seq)" }
        case let candle where candle.hasPrefix("candle"):
            guard let values = record.arrayValue, values.count >= 6 else { throw NormalizationError("OKX candle is not an array") }
            message.messageType = .candle
            message.exchangeTimestampMs = values[0].int64
            message.price = values[4].text
            message.quantity = values[5].text
            message.fields = [
                "interval": .string(String(candle.dropFirst("candle".count))), "open": .optional(values[1].text),
                "high": .optional(values[2].text), "low": .optional(values[3].text), "close": .optional(values[4].text),
                "volume": .optional(values[5].text), "closed": .bool(values.count > 8 && values[8].text == "1"),
            ]
        default:
            message.price = record["px"].text ?? record["last"].text
        }
        return message
    }
}
