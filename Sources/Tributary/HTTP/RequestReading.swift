import Foundation
import Hummingbird
import NIOCore

/// Reading request bodies and query parameters the way every API route does.
extension Request {
    /// The API's body limit.
    static let maxBodySize = 1 << 20
    /// After refusing a body as too large, the rest is read and discarded for up to this long, so
    /// a client that writes its whole body before reading (Python's urllib does) still gets the
    /// 413; a body that has not ended by then has its connection closed (nginx's lingering close).
    static let drainTime: Duration = .seconds(10)

    /// The body as JSON: 415 unless sent as JSON, 413 over 1 MiB (after a bounded drain of the
    /// rest), 400 when malformed.
    mutating func jsonBody(context: some RequestContext) async throws -> JSONValue {
        // A browser can send text/plain or a form cross-origin without asking first; JSON it cannot.
        guard Self.isJSON(headers[.contentType]) else {
            throw APIError(.unsupportedMediaType, code: "UNSUPPORTED_MEDIA_TYPE", detail: "Send the body as JSON with Content-Type: application/json")
        }
        var buffer = ByteBuffer()
        var tooLarge = headers[.contentLength].flatMap(Int.init).map { $0 > Self.maxBodySize } ?? false
        // One pass: collect up to the limit; past it, read and drop the rest within `drainTime`.
        // (A client that stops sending altogether is left to the connection's idle timeout.)
        let deadline = ContinuousClock.now + Self.drainTime
        var ended = true
        for try await part in body {
            if !tooLarge, buffer.readableBytes + part.readableBytes <= Self.maxBodySize {
                var part = part
                buffer.writeBuffer(&part)
                continue
            }
            tooLarge = true
            if ContinuousClock.now > deadline {
                ended = false
                break
            }
        }
        if tooLarge {
            if !ended, let connection = context as? any ConnectionContext { connection.channel.close(promise: nil) }
            throw APIError(
                .contentTooLarge,
                code: "PAYLOAD_TOO_LARGE",
                detail: "The request body exceeds the 1 MiB limit"
            )
        }
        guard buffer.readableBytes > 0 else {
            throw APIError(.badRequest, code: "INVALID_JSON", detail: "The request body is empty; send a JSON object")
        }
        do {
            return try JSONValue.parse(buffer.readableBytesView)
        } catch {
            throw APIError(.badRequest, code: "INVALID_JSON", detail: "The request body is not valid JSON: \(error)")
        }
    }

    /// `application/json`, with or without parameters (`; charset=utf-8`).
    static func isJSON(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        let mediaType = contentType.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        return mediaType == "application/json"
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
