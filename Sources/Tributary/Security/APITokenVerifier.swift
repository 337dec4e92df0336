import Crypto

/// Checks bearer tokens against the configured `TRIBUTARY_API_TOKENS` in constant time.
public struct APITokenVerifier: Sendable {
    let digests: [[UInt8]]

    public init(tokens: [String]) {
        self.digests = tokens.map { Array(SHA256.hash(data: Array($0.utf8))) }
    }

    public var isEnabled: Bool { !digests.isEmpty }

    /// Compares fixed-length digests, visiting every configured token, so timing reveals neither
    /// how much of a token matched nor which one.
    public func isValid(_ candidate: String) -> Bool {
        let digest = Array(SHA256.hash(data: Array(candidate.utf8)))
        var matched: UInt8 = 0
        for expected in digests {
            var difference: UInt8 = 0
            for index in 0..<expected.count { difference |= expected[index] ^ digest[index] }
            matched |= difference == 0 ? 1 : 0
        }
        return matched == 1
    }
}
