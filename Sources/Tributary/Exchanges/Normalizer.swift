/// Turns one inbound frame of a connector into market messages, control events or an exchange error.
/// Pure code: no I/O, table-tested with the exchanges' documented messages.
public struct Normalizer: Sendable {
    enum Kind: Sendable {
        case okx, binance, bybit, coinbase, kraken
        case custom(CustomNormalizer)
    }

    let kind: Kind

    public init(exchange: Exchange, fieldMapping: JSONValue? = nil) {
        switch exchange {
        case .okx: kind = .okx
        case .binance: kind = .binance
        case .bybit: kind = .bybit
        case .coinbase: kind = .coinbase
        case .kraken: kind = .kraken
        case .custom: kind = .custom(CustomNormalizer(fieldMapping: fieldMapping))
        }
    }

    /// Normalizes a parsed JSON frame.
    public func normalize(_ frame: JSONValue) throws(NormalizationError) -> NormalizedFrame {
        switch kind {
        case .okx: try OKXNormalizer().normalize(frame)
        case .binance: try BinanceNormalizer().normalize(frame)
        case .bybit: try BybitNormalizer().normalize(frame)
        case .coinbase: try CoinbaseNormalizer().normalize(frame)
        case .kraken: try KrakenNormalizer().normalize(frame)
        case .custom(let custom): try custom.normalize(frame)
        }
    }

    /// Normalizes a text frame: keepalive words (`pong`) are control, anything else must be JSON.
    public func normalize(text: some Collection<UInt8>) throws(NormalizationError) -> NormalizedFrame {
        if text.count <= 4, String(decoding: text, as: UTF8.self) == "pong" || String(decoding: text, as: UTF8.self) == "ping" {
            return .control("keepalive")
        }
        let frame: JSONValue
        do { frame = try JSONValue.parse(text) } catch { throw NormalizationError("malformed JSON: \(error)") }
        return try normalize(frame)
    }
}
