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
        let upper = symbol.uppercased()
        let parts = upper.split(whereSeparator: { $0 == "-" || $0 == "/" || $0 == "_" }).map(String.init)
        if parts.count >= 2 {
            return "\(alias(parts[0]))-\(alias(parts[1]))"
        }
        return splitConcatenated(upper) ?? upper
    }

    static func alias(_ asset: String) -> String {
        switch asset {
        case "XBT": "BTC"
        case "XDG": "DOGE"
        default: asset
        }
    }
}
