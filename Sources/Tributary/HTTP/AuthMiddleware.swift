import HTTPTypes
import Hummingbird

/// Requires `Authorization: Bearer <token>` on every `/api` route when API tokens are configured.
/// The realtime WebSocket may pass `?token=` instead, since browsers cannot set headers on it.
public struct AuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let verifier: APITokenVerifier

    public init(verifier: APITokenVerifier) { self.verifier = verifier }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard verifier.isEnabled else { return try await next(request, context) }
        var candidate: String?
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { candidate = String(parts[1]) }
        } else if request.uri.path == "/api/realtime" {
            candidate = request.uri.queryParameters.get("token")
        }
        guard let candidate, verifier.isValid(candidate) else {
            throw APIError(
                .unauthorized,
                code: "UNAUTHORIZED",
                detail: candidate == nil ? "Missing API token: send Authorization: Bearer <token>" : "Invalid API token",
                headers: [.wwwAuthenticate: "Bearer"]
            )
        }
        return try await next(request, context)
    }
}
