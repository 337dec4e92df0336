import Foundation
import HTTPTypes
import Hummingbird

/// What a web page in the operator's browser may do with the API. Without API tokens the API
/// trusts whoever reaches it, so a page must not be able to reach it through the browser:
/// - **DNS rebinding:** without tokens, a `Host` that is not this server's address or `localhost`
///   gets a 421, so a hostile name re-pointed at 127.0.0.1 cannot be served.
/// - **Cross-origin requests:** a request with an `Origin` that is neither the server itself nor
///   in `TRIBUTARY_ALLOWED_ORIGINS` gets a 403 (this covers `/api/realtime` too, where browsers
///   send `Origin` on the upgrade). Allowed origins get CORS headers and preflight answers.
/// - **Form posts:** a request body must be `application/json` (415 otherwise, see
///   `Request.jsonBody`); a browser cannot send that cross-origin without a preflight.
public struct BrowserPolicy: Sendable, Equatable {
    /// Lower-case origins (`https://console.example.com`); `*` allows any.
    public var allowedOrigins: Set<String>
    /// Lower-case host names (no port) the server answers to when it checks `Host`.
    public var allowedHosts: Set<String>
    /// Whether `Host` is checked: without API tokens.
    public var checksHost: Bool

    public init(allowedOrigins: Set<String> = [], allowedHosts: Set<String> = [], checksHost: Bool = true) {
        self.allowedOrigins = allowedOrigins
        self.allowedHosts = allowedHosts.union(["localhost", "127.0.0.1", "::1"])
        self.checksHost = checksHost
    }

    public init(config: AppConfig) {
        let originHosts = config.allowedOrigins.compactMap { Self.hostAndPort(ofOrigin: $0)?.host }
        self.init(
            allowedOrigins: Set(config.allowedOrigins),
            allowedHosts: Set([config.host.lowercased()] + config.allowedHosts + originHosts),
            checksHost: config.apiTokens.isEmpty
        )
    }

    /// The host (lower case, IPv6 without brackets) and port of a `Host` header value.
    static func split(authority: String) -> (host: String, port: String?) {
        let lower = authority.lowercased()
        if lower.hasPrefix("["), let close = lower.firstIndex(of: "]") {
            let host = String(lower[lower.index(after: lower.startIndex)..<close])
            let rest = lower[lower.index(after: close)...]
            return (host, rest.hasPrefix(":") ? String(rest.dropFirst()) : nil)
        }
        let parts = lower.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        return (String(parts[0]), parts.count == 2 ? String(parts[1]) : nil)
    }

    /// The host and port of an origin (`http://localhost:8000`), the port defaulted by scheme.
    static func hostAndPort(ofOrigin origin: String) -> (host: String, port: String)? {
        let lower = origin.lowercased()
        let scheme: String
        let rest: Substring
        if lower.hasPrefix("http://") {
            (scheme, rest) = ("http", lower.dropFirst(7))
        } else if lower.hasPrefix("https://") {
            (scheme, rest) = ("https", lower.dropFirst(8))
        } else {
            return nil
        }
        let (host, port) = split(authority: String(rest))
        guard !host.isEmpty else { return nil }
        return (host, port ?? (scheme == "https" ? "443" : "80"))
    }
}

public struct BrowserSafetyMiddleware<Context: RequestContext>: RouterMiddleware {
    let policy: BrowserPolicy

    public init(policy: BrowserPolicy) { self.policy = policy }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let authority = request.head.authority ?? ""
        let (host, port) = BrowserPolicy.split(authority: authority)
        if policy.checksHost, !policy.allowedHosts.contains(host) {
            throw APIError(
                .misdirectedRequest,
                code: "MISDIRECTED_REQUEST",
                detail:
                    "This server does not answer to the host \"\(host.prefix(100))\" without API tokens; use localhost, or set TRIBUTARY_API_TOKENS or TRIBUTARY_ALLOWED_HOSTS"
            )
        }
        var allowedCrossOrigin: String?
        // Only browsers are held to origins, and browsers send http(s) origins or "null";
        // other clients may send what they like (a WebSocket client library sends ws://host).
        if let origin = request.headers[.origin], Self.isBrowserOrigin(origin) {
            // A Host without a port means the scheme's default, the same default the origin got.
            let defaultPort = origin.lowercased().hasPrefix("https://") ? "443" : "80"
            let sameOrigin = BrowserPolicy.hostAndPort(ofOrigin: origin).map { $0.host == host && $0.port == (port ?? defaultPort) } ?? false
            if !sameOrigin {
                guard policy.allowedOrigins.contains("*") || policy.allowedOrigins.contains(origin.lowercased()) else {
                    throw APIError(
                        .forbidden,
                        code: "ORIGIN_NOT_ALLOWED",
                        detail: "Cross-origin requests from \(origin.prefix(100)) are not allowed; list the origin in TRIBUTARY_ALLOWED_ORIGINS"
                    )
                }
                allowedCrossOrigin = origin
            }
        }
        if let origin = allowedCrossOrigin, request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            return Response(status: .noContent, headers: Self.corsHeaders(origin, preflight: true))
        }
        guard let origin = allowedCrossOrigin else { return try await next(request, context) }
        // Errors too carry the CORS headers, so the allowed page can read why.
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            response = try ErrorMiddleware<Context>.map(error, request: request, context: context)
        }
        response.headers.append(contentsOf: Self.corsHeaders(origin, preflight: false))
        return response
    }

    static func isBrowserOrigin(_ origin: String) -> Bool {
        let lower = origin.lowercased()
        return lower == "null" || lower.hasPrefix("http://") || lower.hasPrefix("https://")
    }

    static func corsHeaders(_ origin: String, preflight: Bool) -> HTTPFields {
        var headers: HTTPFields = [.accessControlAllowOrigin: origin, .vary: "Origin"]
        if preflight {
            headers[.accessControlAllowMethods] = "GET, POST, PUT, DELETE"
            headers[.accessControlAllowHeaders] = "Authorization, Content-Type"
            headers[.accessControlMaxAge] = "600"
        }
        return headers
    }
}
