/// Kraken WebSocket v2: `trade` and `ticker` channels; heartbeats, status and method replies are control.
struct KrakenNormalizer {
    func normalize(_ frame: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        if let method = frame["method"]?.stringValue {
            if frame["success"]?.boolValue == false {
                return .exchangeError("Kraken \(method) failed: \(frame["error"]?.stringValue ?? "")")
            }
            return .control(method)
        }
        guard let channel = frame["channel"]?.stringValue else { throw NormalizationError("Kraken frame without channel") }
        guard channel == "trade" || channel == "ticker", let records = frame["data"]?.arrayValue else { return .control(channel) }
        var collector = RecordCollector(capacity: records.count)
        for record in records {
            collector.add(record) { () throws(NormalizationError) in try message(channel: channel, record: record) }
        }
        return try collector.frame()
    }

    func message(channel: String, record: JSONValue) throws(NormalizationError) -> MarketMessage {
        let symbol = record["symbol"]?.stringValue
        if channel == "trade" {
            guard let price = record["price"].text, let quantity = record["qty"].text else {
                throw NormalizationError("Kraken trade without price or qty")
            }
            let tradeID = record["trade_id"].text
            return MarketMessage(
                exchange: .kraken,
                channel: channel,
                messageType: .trade,
                instrument: symbol.map(Instruments.normalize),
                symbol: symbol,
                price: price,
                quantity: quantity,
                side: record["side"]?.stringValue,
                sourceID: tradeID.map { "kraken:trade:\(symbol ?? "?"):\($0)" },
                exchangeTimestampMs: record["timestamp"]?.stringValue.flatMap(Timestamp.parseMilliseconds),
                fields: ["trade_id": .optional(tradeID)],
                raw: record
            )
        } else {
            return MarketMessage(
                exchange: .kraken,
                channel: channel,
                messageType: .ticker,
                instrument: symbol.map(Instruments.normalize),
                symbol: symbol,
                price: record["last"].text,
                quantity: record["volume"].text,
                fields: ["bid_price": .optional(record["bid"].text), "ask_price": .optional(record["ask"].text)],
                raw: record
            )
        }
    }
}
