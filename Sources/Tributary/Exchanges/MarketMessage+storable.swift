/// Whether a normalized record can be stored, checked where records enter (normalization), so
/// the write path never meets a value a store would refuse: one such value would fail its whole
/// batch.
extension MarketMessage {
    /// The longest instrument, symbol, side, channel or source id, in UTF-8 bytes. They are index
    /// keys, and a PostgreSQL B-tree entry cannot exceed about 2.7 kB.
    public static let maximumKeyLength = 256

    /// Why this record cannot be stored, or nil when it can. Runs for every record received, so it
    /// allocates nothing on the way to "storable".
    public var rejection: Rejection? {
        if let price, !ExactDecimal.isValid(price) { return Self.notDecimal("price", price) }
        if let quantity, !ExactDecimal.isValid(quantity) { return Self.notDecimal("quantity", quantity) }
        if let exchangeTimestampMs, !Timestamp.isValid(milliseconds: exchangeTimestampMs) {
            return Rejection(reason: "timestamp_out_of_range", detail: "exchange timestamp \(exchangeTimestampMs) ms is outside years 0001-9999")
        }
        if let problem = Self.keyProblem("instrument", instrument) ?? Self.keyProblem("symbol", symbol) ?? Self.keyProblem("side", side)
            ?? Self.keyProblem("channel", channel) ?? Self.keyProblem("source_id", sourceID)
        {
            return problem
        }
        for (_, value) in fields {
            if let problem = value.storageProblem { return problem }
        }
        return raw.storageProblem
    }

    static func notDecimal(_ field: String, _ value: String) -> Rejection {
        Rejection(reason: "\(field)_not_decimal", detail: "\(field) \(Rejection.quote(value)) is not a decimal within 38 digits")
    }

    /// Why a key column's value cannot be stored: too long for an index entry, or holding a NUL.
    static func keyProblem(_ field: String, _ value: String?) -> Rejection? {
        guard let value else { return nil }
        let bytes = value.utf8
        if bytes.count > maximumKeyLength {
            return Rejection(reason: "\(field)_too_long", detail: "\(field) is \(bytes.count) bytes, more than \(maximumKeyLength)")
        }
        if bytes.contains(0) { return Rejection(reason: "nul_character", detail: "\(field) contains a NUL character") }
        return nil
    }
}

/// Why a record was not stored: a short, stable `reason` (counted per connector) and a
/// human-readable `detail` (logged and shown as `last_rejection`), both bounded in length.
public struct Rejection: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    public var detail: String

    public var description: String { detail }

    /// At most 40 characters of a hostile value, with control characters escaped.
    static func quote(_ value: String) -> String {
        var quoted = JSONValue.string(String(value.prefix(40))).serialized
        if value.count > 40 { quoted.insert(contentsOf: "...", at: quoted.index(before: quoted.endIndex)) }
        return quoted
    }
}

extension JSONValue {
    /// The longest JSON number literal that both stores keep as is, and its largest exponent:
    /// PostgreSQL parses numbers in `jsonb` as NUMERIC, which refuses exponents beyond ±1000.
    static let maximumNumberLength = 1000
    static let maximumNumberExponent = 1000

    /// Why this value cannot be stored as JSON by both stores (a NUL character in a string or key,
    /// which PostgreSQL refuses in `jsonb` and `text`; a number beyond NUMERIC), or nil.
    public var storageProblem: Rejection? {
        switch self {
        case .null, .bool: return nil
        case .number(let text):
            guard text.utf8.count <= Self.maximumNumberLength, Self.exponentMagnitude(text) <= Self.maximumNumberExponent else {
                return Rejection(reason: "number_out_of_range", detail: "the number \(Rejection.quote(text)) is beyond what NUMERIC stores")
            }
            return nil
        case .string(let text):
            return text.utf8.contains(0) ? Rejection(reason: "nul_character", detail: "a string contains a NUL character") : nil
        case .array(let elements):
            for element in elements {
                if let problem = element.storageProblem { return problem }
            }
            return nil
        case .object(let object):
            for (key, value) in object {
                if key.utf8.contains(0) { return Rejection(reason: "nul_character", detail: "a key contains a NUL character") }
                if let problem = value.storageProblem { return problem }
            }
            return nil
        }
    }

    /// The magnitude of a JSON number literal's exponent (0 without one), saturating instead of overflowing.
    static func exponentMagnitude(_ literal: String) -> Int {
        guard let marker = literal.utf8.firstIndex(where: { $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }) else { return 0 }
        var magnitude = 0
        for byte in literal.utf8[literal.utf8.index(after: marker)...] where byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
            magnitude = min(magnitude * 10 + Int(byte - UInt8(ascii: "0")), Int.max / 20)
        }
        return magnitude
    }
}
