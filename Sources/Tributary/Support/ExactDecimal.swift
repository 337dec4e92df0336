/// A decimal number held exactly as an integer and a count of fraction digits: `12.50` is
/// 1250 with scale 2. Up to 38 significant digits, like Foundation's `Decimal`, but parsing,
/// comparing, adding and printing cost a few integer operations instead of microseconds, which
/// matters when a candle query folds thousands of rows.
struct ExactDecimal: Sendable, Comparable, CustomStringConvertible {
    var units: Int128
    var scale: Int

    static let zero = ExactDecimal(units: 0, scale: 0)

    init(units: Int128, scale: Int) {
        self.units = units
        self.scale = scale
    }

    /// At most this many digit characters (leading zeros included) before the exponent.
    static let maximumDigits = 40
    /// At most this exponent magnitude (`1e-38`, `1e38`).
    static let maximumExponent = 38

    /// The one decimal grammar of Tributary: plain (`-12.5`) or exponent (`1e-7`) notation, at
    /// most `maximumDigits` digits, an exponent of at most ±`maximumExponent`, and a value of at
    /// most 38 significant digits. Every price and quantity is checked with it where it enters, so
    /// whatever is accepted can be stored (PostgreSQL NUMERIC, SQLite text) and summed into candles.
    static func isValid(_ text: String) -> Bool { ExactDecimal(text) != nil }

    /// Plain (`-12.5`) or exponent (`1e-7`) notation; nil for anything else or beyond the bounds of `isValid`.
    init?(_ text: String) {
        var units: Int128 = 0
        var scale = 0
        var negative = false
        var digits = 0
        var seenPoint = false
        var bytes = text.utf8[...]
        if let sign = bytes.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
            negative = sign == UInt8(ascii: "-")
            bytes = bytes.dropFirst()
        }
        while let byte = bytes.first {
            if byte == UInt8(ascii: ".") && !seenPoint {
                seenPoint = true
            } else if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                guard digits < Self.maximumDigits, let shifted = Self.times10(units, by: 1) else { return nil }
                units = shifted + Int128(byte - UInt8(ascii: "0"))
                digits += 1
                if seenPoint { scale += 1 }
            } else {
                break
            }
            bytes = bytes.dropFirst()
        }
        guard digits > 0 else { return nil }
        if let marker = bytes.first, marker == UInt8(ascii: "e") || marker == UInt8(ascii: "E") {
            guard let exponent = Self.exponent(bytes.dropFirst()) else { return nil }
            scale -= exponent
        } else if !bytes.isEmpty {
            return nil
        }
        if scale < 0 {
            guard let shifted = Self.times10(units, by: -scale) else { return nil }
            (units, scale) = (shifted, 0)
        }
        self.init(units: negative ? -units : units, scale: scale)
    }

    /// A signed exponent of at most ±`maximumExponent`, read digit by digit (never through a
    /// conversion that could overflow or a negation of `Int.min`).
    static func exponent(_ text: Substring.UTF8View) -> Int? {
        var bytes = text
        var negative = false
        if let sign = bytes.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
            negative = sign == UInt8(ascii: "-")
            bytes = bytes.dropFirst()
        }
        guard !bytes.isEmpty else { return nil }
        var magnitude = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            magnitude = magnitude * 10 + Int(byte - UInt8(ascii: "0"))
            guard magnitude <= maximumExponent else { return nil }
        }
        return negative ? -magnitude : magnitude
    }

    /// `value × 10^count`, or nil when it does not fit.
    static func times10(_ value: Int128, by count: Int) -> Int128? {
        var result = value
        for _ in 0..<count {
            let (product, overflow) = result.multipliedReportingOverflow(by: 10)
            if overflow { return nil }
            result = product
        }
        return result
    }

    static func < (a: Self, b: Self) -> Bool {
        let scale = max(a.scale, b.scale)
        // A side too large to rescale is larger in magnitude than anything that fits: its sign decides.
        guard let left = a.rescaled(to: scale) else { return a.units < 0 }
        guard let right = b.rescaled(to: scale) else { return b.units > 0 }
        return left < right
    }

    static func == (a: Self, b: Self) -> Bool { !(a < b) && !(b < a) }

    /// The sum: exact while it fits in 38 digits; beyond that the last fraction digits are dropped
    /// (as `Decimal` would), and a sum whose integer part alone does not fit stays at `self`.
    static func + (a: Self, b: Self) -> Self {
        var scale = max(a.scale, b.scale)
        while scale >= 0 {
            if let left = a.rescaled(to: scale), let right = b.rescaled(to: scale) {
                let (sum, overflow) = left.addingReportingOverflow(right)
                if !overflow { return ExactDecimal(units: sum, scale: scale) }
            }
            scale -= 1
        }
        return a
    }

    /// The units at `scale` (fraction digits beyond it dropped), or nil when they do not fit.
    func rescaled(to target: Int) -> Int128? {
        if target >= scale { return Self.times10(units, by: target - scale) }
        var result = units
        for _ in target..<scale { result /= 10 }
        return result
    }

    /// Plain notation without trailing fraction zeros: `4.50` prints as `4.5`, `2.00` as `2`.
    /// Written as bytes, the digits from 64-bit arithmetic when the value fits (nearly always):
    /// `UInt128`'s division and conversion to text cost about a microsecond a value, and every
    /// batch prints the volume of each of its candle minutes. Trailing fraction zeros are dropped
    /// from the digits, with no division at all.
    var description: String {
        guard units != 0 else { return "0" }
        var digits = Array((UInt64(exactly: units.magnitude).map { String($0) } ?? String(units.magnitude)).utf8)
        var scale = self.scale
        // A value other than zero has a digit other than zero, so this stops before it.
        while scale > 0, digits.last == UInt8(ascii: "0") {
            digits.removeLast()
            scale -= 1
        }
        var text: [UInt8] = []
        text.reserveCapacity(digits.count + max(0, scale) + 3)
        if units < 0 { text.append(UInt8(ascii: "-")) }
        if scale > 0 {
            // At least one digit before the point: 0.05 rather than .05.
            let whole = digits.count - scale
            if whole > 0 {
                text.append(contentsOf: digits[..<whole])
                text.append(UInt8(ascii: "."))
                text.append(contentsOf: digits[whole...])
            } else {
                text.append(contentsOf: [UInt8(ascii: "0"), UInt8(ascii: ".")])
                text.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: -whole))
                text.append(contentsOf: digits)
            }
        } else {
            text.append(contentsOf: digits)
        }
        return String(decoding: text, as: UTF8.self)
    }
}
