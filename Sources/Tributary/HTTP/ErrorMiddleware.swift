import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The outermost middleware: turns every error into the API's error body, so no response is an
/// empty 500 or 404, and logs each request by path (never the query string, which may hold a token).
public struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            response = try Self.map(error, request: request, context: context)
        }
        let elapsed = ContinuousClock.now - started
        context.logger.log(
            level: response.status.code >= 500 ? .warning : .debug,
            "request",
            metadata: [
                "method": "\(request.method.rawValue)", "path": "\(request.uri.path)", "status": "\(response.status.code)",
                "duration_ms": "\(elapsed.inMilliseconds)",
            ]
        )
        return response
    }

    static func map(_ error: any Error, request: Request, context: Context) throws -> Response {
        let apiError: APIError
        switch error {
        case let error as APIError: apiError = error
        case ConnectorError.notFound(let id): apiError = .notFound("Connector \(id) not found")
        case ConnectorError.invalid(let errors): apiError = .validation(errors)
        case ConnectorError.limitReached(let total):
            apiError = APIError(.conflict, code: "CONNECTOR_LIMIT", detail: "There are already \(total) connectors, the most MAX_CONNECTORS allows")
        case ConnectorError.testedTooRecently(let wait):
            apiError = APIError(
                .tooManyRequests,
                code: "RATE_LIMITED",
                detail: "This connector was tested moments ago; try again in \(wait.inMilliseconds) ms",
                headers: [.retryAfter: String(max(1, (wait.inMilliseconds + 999) / 1000))]
            )
        case StoreError.duplicateName:
            apiError = APIError(.conflict, code: "DUPLICATE_NAME", detail: "A connector with this name already exists")
        case StoreError.unavailable(let reason), StoreError.timedOut(let reason):
            context.logger.warning("database unavailable", metadata: ["error_type": "StoreError.unavailable", "reason": "\(reason)"])
            apiError = APIError(.serviceUnavailable, code: "DATABASE_UNAVAILABLE", detail: "The database is unavailable; try again shortly")
        case StoreError.rejected(let reason):
            context.logger.warning("database refused a value", metadata: ["error_type": "StoreError.rejected", "reason": "\(reason)"])
            apiError = APIError(.badRequest, code: "INVALID_VALUE", detail: "The database refused a value of this request (\(reason))")
        case is NIOTooManyBytesError:
            apiError = APIError(.contentTooLarge, code: "PAYLOAD_TOO_LARGE", detail: "The request body exceeds the 1 MiB limit")
        case let error as HTTPError where error.status == .notFound:
            apiError = .notFound("No route for \(request.method.rawValue) \(request.uri.path)")
        case let error as any HTTPResponseError:
            apiError = APIError(error.status, code: Self.code(for: error.status), detail: error.status.reasonPhrase)
        default:
            context.logger.error(
                "unhandled error",
                metadata: ["error_type": "\(type(of: error))", "error": "\(String(reflecting: error))", "path": "\(request.uri.path)"]
            )
            apiError = .unexpected
        }
        return try apiError.response(from: request, context: context)
    }

    /// `Not Found` → `NOT_FOUND`.
    static func code(for status: HTTPResponse.Status) -> String {
        status.reasonPhrase.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }
}
