import Foundation
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

@Suite struct TimestampTests {
    @Test(arguments: [
        (1_504_371_949.25, "2017-09-02T17:05:49.250000Z"),
        (0, "1970-01-01T00:00:00.000000Z"),
        (-1.5, "1969-12-31T23:59:58.500000Z"),
        (1_798_761_599.999999, "2026-12-31T23:59:59.999999Z"),
    ])
    func formatsFixedWidthUTCWithMicroseconds(_ seconds: Double, _ text: String) {
        #expect(Timestamp.format(Date(timeIntervalSince1970: seconds)) == text)
        #expect(Timestamp.parse(text).map { abs($0.timeIntervalSince1970 - seconds) < 0.000_002 } == true)
    }

    @Test func parsesOtherFractionLengths() {
        #expect(Timestamp.parseMilliseconds("2026-04-07T14:30:02.789012345Z") == 1_775_572_202_789)
        #expect(Timestamp.parseMilliseconds("2026-04-07T14:30:02Z") == 1_775_572_202_000)
        #expect(Timestamp.parse("2026-04-07 14:30:02Z") == nil)
        #expect(Timestamp.parse("not a time") == nil)
    }
}
