import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// The exact decimal arithmetic behind candles: parsing what PostgreSQL's NUMERIC accepts,
/// comparing across scales, summing without binary floats, printing without trailing zeros.
@Suite struct ExactDecimalTests {
    @Test(arguments: [
        ("43250.123456789", "43250.123456789"), ("-12.50", "-12.5"), ("+7", "7"), ("0.000", "0"), ("1e-7", "0.0000001"),
        ("2.5E3", "2500"), (".5", "0.5"), ("5.", "5"), ("99999999999999999999.999999999999999999", "99999999999999999999.999999999999999999"),
    ])
    func parsesAndPrints(_ text: String, _ printed: String) throws {
        #expect(try #require(ExactDecimal(text)).description == printed)
    }

    /// Printing takes 64-bit steps when the value fits and 128-bit ones when not: both print what
    /// the plain 128-bit algorithm (kept here) prints, at every scale, on both sides of 2^64.
    @Test func printsAsThePlainAlgorithmDoes() {
        func plain(_ value: ExactDecimal) -> String {
            var units = value.units
            var scale = value.scale
            while scale > 0 && units % 10 == 0 {
                units /= 10
                scale -= 1
            }
            var digits = String(units.magnitude)
            if scale > 0 {
                if digits.count <= scale { digits = String(repeating: "0", count: scale - digits.count + 1) + digits }
                digits.insert(".", at: digits.index(digits.endIndex, offsetBy: -scale))
            }
            return units < 0 ? "-" + digits : digits
        }
        let magnitudes: [Int128] = [
            0, 1, 5, 10, 100, 120, 12_345, 1_000_001, Int128(UInt64.max) - 1, Int128(UInt64.max), Int128(UInt64.max) + 1,
            Int128(UInt64.max) * 10, 99_999_999_999_999_999_999_999_999_999_999_999_999, 10_000_000_000_000_000_000_000_000_000_000_000_000,
        ]
        for magnitude in magnitudes {
            for scale in 0...40 {
                for units in [magnitude, -magnitude] {
                    let value = ExactDecimal(units: units, scale: scale)
                    #expect(value.description == plain(value), "\(units) at scale \(scale)")
                }
            }
        }
    }

    @Test(arguments: ["", "-", ".", "1.2.3", "12a", "1e", "0x10", "NaN", "1" + String(repeating: "0", count: 40)])
    func rejectsWhatIsNotADecimal(_ text: String) {
        #expect(ExactDecimal(text) == nil)
    }

    @Test func comparesAcrossScales() throws {
        let values = try ["101.25", "101.2500", "101.3", "-0.5", "99.999999999999999999", "100"].map { try #require(ExactDecimal($0)) }
        #expect(values[0] == values[1])
        #expect(values[0] < values[2])
        #expect(values[3] < values[4])
        #expect(values[4] < values[5])
        #expect(!(values[5] < values[4]))
        // Doubles cannot tell these apart; exact decimals can.
        let close = try ["43250.12345678901234567", "43250.12345678901234568"].map { try #require(ExactDecimal($0)) }
        #expect(close[0] < close[1])
    }

    @Test func sumsExactly() throws {
        let tenths = try #require(ExactDecimal("0.1"))
        let sum = (0..<10).reduce(ExactDecimal.zero) { total, _ in total + tenths }
        #expect(sum.description == "1")
        #expect((try #require(ExactDecimal("0.5")) + (try #require(ExactDecimal("0.25"))) + (try #require(ExactDecimal("1")))).description == "1.75")
        #expect((try #require(ExactDecimal("-3.5")) + (try #require(ExactDecimal("1.25")))).description == "-2.25")
    }

    @Test func aSumBeyond38DigitsDropsFractionDigitsInsteadOfFailing() throws {
        let big = try #require(ExactDecimal("9999999999999999999999999999.9999999999"))
        let sum = big + big
        #expect(sum.description.hasPrefix("19999999999999999999999999999.99999999"), "38 digits kept, the last ones dropped")
    }
}
