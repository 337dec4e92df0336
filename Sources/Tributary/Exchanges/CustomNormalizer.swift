/// Any other source: fields read through `field_mapping` JSON paths, else found under the
/// common key names the original design looked for, at the top level or in `data`.
struct CustomNormalizer {
    /// Mapping keys: `instrument`, `price`, `quantity`, `side`, `timestamp`, `message_type`, `id`.
    let mapping: [String: JSONPath]

    static let fallbacks: [String: [String]] = [
        "instrument": ["instId", "instrument", "symbol", "s", "product_id", "pair", "market"],
        "price": ["px", "price", "p", "last", "lastPrice", "c"],
        "quantity": ["sz", "size", "qty", "quantity", "q", "v", "amount"],
        "side": ["side", "S"],
        "timestamp": ["ts", "timestamp", "time", "T", "E"],
        "id": ["tradeId", "trade_id", "t", "id"],
    ]

    init(fieldMapping: JSONValue?) {
        var mapping: [String: JSONPath] = [:]
        for (key, value) in fieldMapping?.objectValue ?? [:] {
            if let text = value.stringValue, let path = JSONPath(text) { mapping[key] = path }
        }
        self.mapping = mapping
    }

    func normalize(_ frame: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        guard frame.objectValue != nil || frame.arrayValue != nil else { throw NormalizationError("frame is not a JSON object") }
        if frame["event"]?.stringValue == "error" || frame["type"]?.stringValue == "error" {
            return .exchangeError(frame["msg"]?.stringValue ?? frame["message"]?.stringValue ?? "error event")
        }
        let record = frame["data"].flatMap { $0.arrayValue?.first ?? $0 }
        func field(_ name: String) -> JSONValue? {
            if let path = mapping[name] { return path.evaluate(frame) }
            for candidate in [frame, record].compactMap({ $0 }) {
                for key in Self.fallbacks[name] ?? [] {
                    if let value = candidate[key], value.text != nil { return value }
                }
            }
            return nil
        }
        let symbol = field("instrument").text
        let price = field("price").text
        guard symbol != nil || price != nil else {
            if frame["event"] != nil || frame["op"] != nil || frame["method"] != nil || frame["type"] != nil { return .control("event") }
            throw NormalizationError("no instrument or price found; set field_mapping")
        }
        let timestamp = field("timestamp")
        let type = field("message_type")?.stringValue.flatMap(MessageType.init(rawValue:)) ?? (field("quantity") != nil ? .trade : .ticker)
        let id = field("id").text
        return .messages([
            MarketMessage(
                exchange: .custom,
                channel: "custom",
                messageType: type,
                instrument: symbol.map(Instruments.normalize),
                symbol: symbol,
                price: price,
                quantity: field("quantity").text,
                side: field("side")?.stringValue?.lowercased(),
                sourceID: id.map { "custom:\(symbol ?? "?"):\($0)" },
                exchangeTimestampMs: timestamp.int64 ?? timestamp?.stringValue.flatMap(Timestamp.parseMilliseconds),
                raw: frame
            )
        ])
    }
}
