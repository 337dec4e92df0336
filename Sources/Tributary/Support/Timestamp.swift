import Foundation

/// ISO-8601 UTC timestamps with microseconds (`2026-01-01T00:00:00.000000Z`): fixed width, so
/// SQLite's text columns sort chronologically, and the precision PostgreSQL keeps.
public enum Timestamp {
    /// Microseconds since 1970, rounded: the precision both stores keep.
    static func microseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1_000_000).rounded()) }

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

    /// Milliseconds since 1970 of an RFC 3339 UTC time such as Coinbase's `2026-04-07T14:30:02.789012345Z`.
    public static func parseMilliseconds(_ text: String) -> Int64? {
        parse(text).map { Int64(($0.timeIntervalSince1970 * 1000).rounded(.down)) }
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
