/// Instrument naming: every exchange's symbol to `BASE-QUOTE`, upper case.
public enum Instruments {
    /// Quote currencies, longest first, to split concatenated symbols (`BTCUSDT` → `BTC-USDT`).
    static let quotes = [
        "FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDP", "DAI", "USD", "EUR", "GBP", "TRY", "BRL", "JPY", "AUD", "BTC", "ETH",
        "BNB", "XRP", "DOGE", "SOL", "TRX",
    ].sorted { $0.count > $1.count }

    /// `BTCUSDT` → `BTC-USDT`; `nil` when no known quote currency ends the symbol.
    public static func splitConcatenated(_ symbol: String) -> String? {
        let upper = symbol.uppercased()
        for quote in quotes where upper.hasSuffix(quote) && upper.count > quote.count {
            return "\(upper.dropLast(quote.count))-\(quote)"
        }
        return nil
    }

    /// `BTC-USDT-SWAP` → `BTC-USDT`; `BTC/USD` → `BTC-USD`; `XBT/USD` → `BTC-USD`; `btcusdt` → `BTC-USDT`.
    public static func normalize(_ symbol: String) -> String {
        if isNormalized(symbol) { return symbol }
        let upper = symbol.uppercased()
        let parts = upper.split(whereSeparator: { $0 == "-" || $0 == "/" || $0 == "_" }).map(String.init)
        if parts.count >= 2 {
            return "\(alias(parts[0]))-\(alias(parts[1]))"
        }
        return splitConcatenated(upper) ?? upper
    }

    /// True for what `normalize` would return unchanged: upper-case letters and digits, one `-`
    /// between two non-empty parts, no aliased asset. Checked byte by byte, as every record's
    /// instrument goes through here and most (OKX, Bybit, Coinbase) already are `BASE-QUOTE`.
    static func isNormalized(_ symbol: String) -> Bool {
        var dash: Int?
        var length = 0
        for byte in symbol.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): break
            case UInt8(ascii: "-") where dash == nil: dash = length
            default: return false
            }
            length += 1
        }
        guard let dash, dash > 0, dash < length - 1 else { return false }
        let base = symbol.utf8.prefix(dash)
        let quote = symbol.utf8.suffix(length - dash - 1)
        return !aliases.keys.contains { base.elementsEqual($0.utf8) || quote.elementsEqual($0.utf8) }
    }

    /// Kraken's names for assets that everyone else calls otherwise.
    static let aliases = ["XBT": "BTC", "XDG": "DOGE"]

    static func alias(_ asset: String) -> String { aliases[asset] ?? asset }
}
