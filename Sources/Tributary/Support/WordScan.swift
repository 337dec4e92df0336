/// Eight bytes at a time: whether a word read from text holds a byte of interest, so the
/// per-message writers (JSON strings, `COPY` fields) copy long runs with nothing to escape
/// without looking at each byte. Exact, not a guess: the "has zero byte" and "has less"
/// tricks of Sean Anderson's Bit Twiddling Hacks (`lessThan` up to 128).
enum WordScan {
    static let ones: UInt64 = 0x0101_0101_0101_0101
    static let highs: UInt64 = 0x8080_8080_8080_8080

    /// The eight bytes at `offset` of `bytes`, the first in the lowest bits.
    static func word(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int) -> UInt64 {
        UInt64(littleEndian: UnsafeRawBufferPointer(bytes).loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    static func has(_ word: UInt64, byte: UInt8) -> Bool {
        let matched = word ^ (ones &* UInt64(byte))
        return (matched &- ones) & ~matched & highs != 0
    }

    static func has(_ word: UInt64, lessThan bound: UInt8) -> Bool {
        (word &- ones &* UInt64(bound)) & ~word & highs != 0
    }
}
