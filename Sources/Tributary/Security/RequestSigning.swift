import Crypto
import Foundation

/// An HTTP request as the REST connector is about to send it, in the exact textual form that
/// gets signed: the path, the encoded query string (without `?`) and the body bytes as sent.
public struct SignableRequest: Sendable, Equatable {
    public var method: String
    public var path: String
    /// Percent-encoded `name=value` pairs joined with `&`, in the order they are sent.
    public var query: String
    public var headers: [(name: String, value: String)]
    public var body: String

    public init(method: String, path: String, query: String = "", headers: [(name: String, value: String)] = [], body: String = "") {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
    }

    /// The path with its query string: what OKX calls `requestPath`.
    public var pathWithQuery: String { query.isEmpty ? path : path + "?" + query }

    public mutating func appendQuery(_ name: String, _ value: String) {
        let pair = Self.percentEncode(name) + "=" + Self.percentEncode(value)
        query = query.isEmpty ? pair : query + "&" + pair
    }

    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    public static func == (lhs: SignableRequest, rhs: SignableRequest) -> Bool {
        lhs.method == rhs.method && lhs.path == rhs.path && lhs.query == rhs.query && lhs.body == rhs.body
            && lhs.headers.map { [$0.name, $0.value] } == rhs.headers.map { [$0.name, $0.value] }
    }

    /// RFC 3986 percent-encoding of everything but unreserved characters (Binance signs the
    /// percent-encoded form of non-ASCII values).
    public static func percentEncode(_ text: String) -> String {
        var encoded = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                encoded += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return encoded
    }
}

/// HMAC request signing as the exchanges specify it. Pure functions of their inputs (the clock is
/// a parameter), tested against the published vectors.
public enum RequestSigning {
    public enum Algorithm: String, Sendable {
        case sha256
        case sha512
    }

    public enum Encoding: String, Sendable {
        case hex
        case base64
    }

    public static func hmac(_ algorithm: Algorithm, secret: String, message: String) -> [UInt8] {
        let key = SymmetricKey(data: Array(secret.utf8))
        switch algorithm {
        case .sha256: return Array(HMAC<SHA256>.authenticationCode(for: Array(message.utf8), using: key))
        case .sha512: return Array(HMAC<SHA512>.authenticationCode(for: Array(message.utf8), using: key))
        }
    }

    public static func encode(_ bytes: [UInt8], _ encoding: Encoding) -> String {
        switch encoding {
        case .hex: return bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        case .base64: return Data(bytes).base64EncodedString()
        }
    }

    /// OKX: base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath + body)).
    public static func okxSignature(secret: String, timestamp: String, method: String, requestPath: String, body: String) -> String {
        encode(hmac(.sha256, secret: secret, message: timestamp + method.uppercased() + requestPath + body), .base64)
    }

    /// Binance: hex(HMAC-SHA256(secret, query string + body)), the query exactly as sent.
    public static func binanceSignature(secret: String, query: String, body: String = "") -> String {
        encode(hmac(.sha256, secret: secret, message: query + body), .hex)
    }

    /// Generic: fills `{timestamp}`, `{method}`, `{path}`, `{query}`, `{path_with_query}` and `{body}`
    /// into `template` and signs the result.
    public static func genericSignature(
        secret: String,
        template: String,
        request: SignableRequest,
        timestamp: String,
        algorithm: Algorithm,
        encoding: Encoding
    ) -> String {
        let message =
            template
            .replacingOccurrences(of: "{timestamp}", with: timestamp)
            .replacingOccurrences(of: "{method}", with: request.method.uppercased())
            .replacingOccurrences(of: "{path_with_query}", with: request.pathWithQuery)
            .replacingOccurrences(of: "{path}", with: request.path)
            .replacingOccurrences(of: "{query}", with: request.query)
            .replacingOccurrences(of: "{body}", with: request.body)
        return encode(hmac(algorithm, secret: secret, message: message), encoding)
    }

    /// OKX's `OK-ACCESS-TIMESTAMP`: ISO-8601 UTC with milliseconds (`2020-12-08T09:08:57.715Z`).
    public static func isoMilliseconds(_ date: Date) -> String {
        let milliseconds = (date.timeIntervalSince1970 * 1000).rounded()
        return Timestamp.format(Date(timeIntervalSince1970: milliseconds / 1000)).prefix(23) + "Z"
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
