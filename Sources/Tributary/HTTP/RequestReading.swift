import Hummingbird
import NIOCore

/// Reading request bodies and query parameters the way every API route does.
extension Request {
    /// The API's body limit.
    static let maxBodySize = 1 << 20

    /// The body as JSON: 413 over 1 MiB (checked on `Content-Length` before reading), 400 when malformed.
    mutating func jsonBody() async throws -> JSONValue {
        if let length = headers[.contentLength].flatMap(Int.init), length > Self.maxBodySize {
            throw NIOTooManyBytesError(maxBytes: Self.maxBodySize)
        }
        let buffer = try await collectBody(upTo: Self.maxBodySize)
        guard buffer.readableBytes > 0 else {
            throw APIError(.badRequest, code: "INVALID_JSON", detail: "The request body is empty; send a JSON object")
        }
        do {
            return try buffer.withUnsafeReadableBytes { raw in
                try JSONValue.parse(UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: raw.count))
            }
        } catch {
            throw APIError(.badRequest, code: "INVALID_JSON", detail: "The request body is not valid JSON: \(error)")
        }
    }

    /// An optional integer query parameter within `range`; 400 naming it otherwise.
    func integerParameter(_ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = uri.queryParameters.get(name) else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw APIError.invalidParameter(name, "must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }
}
