import Hummingbird

/// Refuses a request whose query parameters hold a NUL character (`%00`), with a 400 naming the
/// parameter. No store keeps NUL in text (PostgreSQL refuses it), so such a filter could only
/// fail deeper down as a database error. (Path parameters arrive undecoded: `%00` stays text.)
public struct TextInputMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        for (name, value) in request.uri.queryParameters where name.utf8.contains(0) || value.utf8.contains(0) {
            let shown = name.utf8.contains(0) ? "query parameter name" : String(name)
            throw APIError.invalidParameter(shown, "must not contain a NUL character")
        }
        return try await next(request, context)
    }
}
