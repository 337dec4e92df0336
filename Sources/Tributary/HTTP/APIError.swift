import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// An error the API reports with its error body:
/// `{"detail":"...","error_code":"SNAKE_UPPER","timestamp":"...","errors":[{"field":...,"problem":...}]}`.
public struct APIError: HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var detail: String
    public var fieldErrors: [FieldError]
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, code: String, detail: String, fieldErrors: [FieldError] = [], headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.detail = detail
        self.fieldErrors = fieldErrors
        self.headers = headers
    }

    /// At most this many field errors are listed (a body of 60,000 unknown keys gets a short answer).
    static let maximumFieldErrors = 50

    public static func validation(_ errors: [FieldError]) -> APIError {
        let shown = Array(errors.prefix(maximumFieldErrors))
        let more = errors.count > shown.count ? " and \(errors.count - shown.count) more" : ""
        let detail =
            errors.count == 1
            ? "Invalid \(errors[0].field): \(errors[0].problem)"
            : "Invalid fields: \(shown.map(\.field).joined(separator: ", "))\(more)"
        return APIError(.badRequest, code: "VALIDATION_ERROR", detail: detail, fieldErrors: shown)
    }

    public static func invalidParameter(_ name: String, _ problem: String) -> APIError {
        APIError(
            .badRequest,
            code: "VALIDATION_ERROR",
            detail: "Invalid \(name): \(problem)",
            fieldErrors: [FieldError(field: name, problem: problem)]
        )
    }

    public static func notFound(_ detail: String) -> APIError {
        APIError(.notFound, code: "NOT_FOUND", detail: detail)
    }

    public static let unexpected = APIError(
        .internalServerError,
        code: "INTERNAL_ERROR",
        detail: "The server hit an unexpected error; it has been logged."
    )

    public var body: JSONValue {
        var object: JSONObject = [
            "detail": .string(detail),
            "error_code": .string(code),
            "timestamp": .string(Timestamp.format(Date())),
        ]
        if !fieldErrors.isEmpty {
            object["errors"] = .array(fieldErrors.map { .object(["field": .string($0.field), "problem": .string($0.problem)]) })
        }
        return .object(object)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = JSONResponse.make(status, body)
        response.headers.append(contentsOf: headers)
        return response
    }
}

/// JSON responses and the API's success envelope.
public enum JSONResponse {
    public static func make(_ status: HTTPResponse.Status, _ body: JSONValue) -> Response {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(512)
        body.write(to: &bytes)
        return Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes))
        )
    }

    /// `{"status":"success","message":...,"data":...}` plus any extra top-level members.
    public static func success(_ message: String, data: JSONValue, extra: JSONObject = [:]) -> Response {
        var object: JSONObject = ["status": "success", "message": .string(message)]
        for (key, value) in extra { object[key] = value }
        object["data"] = data
        return make(.ok, .object(object))
    }
}
