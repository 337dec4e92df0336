extension JSONValue {
    /// A scalar as exact text: a string as is (empty counts as absent), a number as its literal.
    /// Exchanges send prices as strings (OKX, Binance) or numbers (Kraken); both stay exact.
    var text: String? {
        switch self {
        case .string(let value): value.isEmpty ? nil : value
        case .number(let value): value
        default: nil
        }
    }

    /// An integer from a number or a numeric string (`"1630048897897"`).
    var int64: Int64? { text.flatMap { Int64($0) } }
}

extension Optional where Wrapped == JSONValue {
    var text: String? { self?.text }
    var int64: Int64? { self?.int64 }
}
