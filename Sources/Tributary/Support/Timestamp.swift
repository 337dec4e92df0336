import Foundation

/// ISO-8601 UTC timestamps with microseconds (`2026-01-01T00:00:00.000000Z`): fixed width, so
/// SQLite's text columns sort chronologically, and the precision PostgreSQL keeps.
public enum Timestamp {
    /// The first and last millisecond Tributary accepts anywhere (years 0001 to 9999): what
    /// ISO-8601 text, PostgreSQL's `timestamptz` and SQLite's text columns all hold. Times from
    /// requests and exchanges are checked against these where they enter.
    public static let earliestMilliseconds: Int64 = -62_135_596_800_000
    public static let latestMilliseconds: Int64 = 253_402_300_799_999

    /// True for milliseconds since 1970 within years 0001 to 9999.
    public static func isValid(milliseconds: Int64) -> Bool { (earliestMilliseconds...latestMilliseconds).contains(milliseconds) }

    /// The date of milliseconds since 1970, or nil outside years 0001 to 9999.
    public static func date(milliseconds: Int64) -> Date? {
        isValid(milliseconds: milliseconds) ? Date(timeIntervalSince1970: Double(milliseconds) / 1000) : nil
    }

    /// Microseconds since 1970, rounded: the precision both stores keep. Dates outside years
    /// 0001 to 9999 (which no input can carry, see `isValid`) are clamped rather than trapping.
    static func microseconds(_ date: Date) -> Int64 {
        let earliest = earliestMilliseconds * 1000
        let latest = latestMilliseconds * 1000 + 999
        let value = (date.timeIntervalSince1970 * 1_000_000).rounded()
        // Compared as Doubles, but the bounds returned exactly (a Double rounds them by up to 32).
        guard !value.isNaN, value > Double(earliest) else { return value.isNaN ? latest : earliest }
        guard value < Double(latest) else { return latest }
        return Int64(value)
    }

    public static func format(_ date: Date) -> String {
        let microseconds = Self.microseconds(date)
        var seconds = time_t(microseconds.floorDivided(by: 1_000_000))
        let fraction = Int(microseconds - Int64(seconds) * 1_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        // Written digit by digit into a fixed buffer: this runs several times per stored message.
        return String(unsafeUninitializedCapacity: 27) { buffer in
            var index = 0
            func put(_ value: Int, width: Int) {
                var value = value
                for offset in stride(from: width - 1, through: 0, by: -1) {
                    buffer[index + offset] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                }
                index += width
            }
            func put(_ byte: UInt8) {
                buffer[index] = byte
                index += 1
            }
            put(Int(parts.tm_year) + 1900, width: 4)
            put(UInt8(ascii: "-"))
            put(Int(parts.tm_mon) + 1, width: 2)
            put(UInt8(ascii: "-"))
            put(Int(parts.tm_mday), width: 2)
            put(UInt8(ascii: "T"))
            put(Int(parts.tm_hour), width: 2)
            put(UInt8(ascii: ":"))
            put(Int(parts.tm_min), width: 2)
            put(UInt8(ascii: ":"))
            put(Int(parts.tm_sec), width: 2)
            put(UInt8(ascii: "."))
            put(fraction, width: 6)
            put(UInt8(ascii: "Z"))
            return index
        }
    }

    /// A time as the query API takes it: ISO-8601 UTC (what `parse` reads) or epoch milliseconds,
    /// within years 0001 to 9999; nil for anything else.
    public static func parseParameter(_ text: String) -> Date? {
        if !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
            return Int64(text).flatMap(date(milliseconds:))
        }
        return parse(text)
    }

    /// Milliseconds since 1970 of an RFC 3339 UTC time such as Coinbase's `2026-04-07T14:30:02.789012345Z`.
    public static func parseMilliseconds(_ text: String) -> Int64? {
        parse(text).map { microseconds($0).floorDivided(by: 1000) }
    }

    /// Parses what `format` writes, and the same with 0 to 9 fraction digits (beyond 6 truncated).
    public static func parse(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 20, bytes.last == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for index in range {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            return value
        }
        let separators: [(Int, Character)] = [(4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":")]
        guard separators.allSatisfy({ bytes[$0.0] == $0.1.asciiValue }) else { return nil }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19)
        else { return nil }
        guard (1...9999).contains(year), (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second <= 60 else {
            return nil
        }
        var microseconds = 0
        if bytes.count > 20 {
            let digits = bytes.count - 21
            guard bytes[19] == UInt8(ascii: "."), (1...9).contains(digits), let fraction = number(20..<(20 + min(digits, 6))) else {
                return nil
            }
            guard digits <= 6 || number((20 + 6)..<(bytes.count - 1)) != nil else { return nil }
            microseconds = fraction * Int(pow(10, Double(6 - min(digits, 6))))
        }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let seconds = timegm(&parts)
        return Date(timeIntervalSince1970: Double(seconds) + Double(microseconds) / 1_000_000)
    }
}

extension Int64 {
    func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor < 0) ? quotient - 1 : quotient
    }
}
