import HTTPTypes
import Hummingbird

/// Registers routes while remembering them, so a known path with a wrong method answers 405 with
/// `Allow` (Hummingbird answers 404) and tests can compare the routes with the API document. A
/// query parameter the API document does not list for the operation is refused with a 400 that
/// names it, on every route.
public final class RouteTable<Context: RequestContext> {
    public typealias Handler = @Sendable (Request, Context) async throws -> Response

    public private(set) var routes: [(method: HTTPRequest.Method, path: String)] = []
    private var groups: [String: RouterGroup<Context>] = [:]
    private let document = OpenAPIDocument.document

    public init() {}

    /// Adds a route; `path` is the full path with `{parameter}` placeholders.
    public func add(_ method: HTTPRequest.Method, _ path: String, in group: RouterGroup<Context>, use handler: @escaping Handler) {
        routes.append((method, path))
        groups[path] = group
        let accepted = OpenAPIDocument.queryParameterNames(method.rawValue, path, in: document)
        group.on(RouterPath(Self.hummingbirdPath(path)), method: method) { request, context in
            try Self.refuseUnknownParameters(request, accepted: accepted)
            return try await handler(request, context)
        }
    }

    /// A 400 naming the first query parameter not in `accepted` (and listing those that are).
    static func refuseUnknownParameters(_ request: Request, accepted: Set<String>) throws {
        guard let unknown = request.uri.queryParameters.first(where: { !accepted.contains(String($0.key)) }) else { return }
        let known = accepted.isEmpty ? "this route takes no query parameters" : "accepted: \(accepted.sorted().joined(separator: ", "))"
        throw APIError.invalidParameter(String(unknown.key), "is not a parameter of \(request.uri.path); \(known)")
    }

    /// Answers every other common method on each known path with 405; call once all routes are added.
    public func addMethodNotAllowedResponders() {
        let methods: [HTTPRequest.Method] = [.get, .post, .put, .patch, .delete]
        for (path, group) in groups {
            let allowed = routes.filter { $0.path == path }.map(\.method)
            let allow = allowed.map(\.rawValue).joined(separator: ", ")
            for method in methods where !allowed.contains(method) {
                group.on(RouterPath(Self.hummingbirdPath(path)), method: method) { request, _ -> Response in
                    throw APIError(
                        .methodNotAllowed,
                        code: "METHOD_NOT_ALLOWED",
                        detail: "\(request.method.rawValue) is not allowed on \(path); use \(allow)",
                        headers: [.allow: allow]
                    )
                }
            }
        }
    }

    /// `/api/connectors/{connector_id}` → `/api/connectors/:connector_id`.
    static func hummingbirdPath(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment.hasPrefix("{") && segment.hasSuffix("}") ? ":" + segment.dropFirst().dropLast() : String(segment)
        }.joined(separator: "/")
    }
}
