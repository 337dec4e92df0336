import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The web console and the API docs page: plain HTML, CSS and JavaScript kept as package resources
/// (`Console/assets`), read once at start and served from memory at `/`, `/docs` and
/// `/console/<file>`. They hold no data: everything comes from the API in the browser, with the
/// tab's token. Missing files (a binary copied without its `tributary_Tributary.resources`
/// directory) make those pages a 404 that says so, never a crash.
public struct ConsoleAssets: Sendable {
    struct File: Sendable {
        let body: ByteBuffer
        let contentType: String
    }

    let files: [String: File]
    /// Where the files were read from; nil when they were not found.
    public let directory: String?

    /// The pages' Content-Security-Policy: only this server's scripts, styles and connections.
    static let securityHeaders: HTTPFields = {
        var fields: HTTPFields = [
            .contentSecurityPolicy:
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            .xContentTypeOptions: "nosniff",
            .cacheControl: "no-cache",
        ]
        if let referrer = HTTPField.Name("Referrer-Policy") { fields[referrer] = "no-referrer" }
        return fields
    }()

    static let contentTypes = [
        "html": "text/html; charset=utf-8", "css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml",
    ]

    /// Reads the files next to the executable (or the test bundle), where SwiftPM puts resources.
    public static func load(logger: Logger) -> ConsoleAssets {
        guard let directory = locate() else {
            logger.warning(
                "console files not found next to the executable: / and /docs answer 404 (copy tributary_Tributary.resources with the binary)"
            )
            return ConsoleAssets(files: [:], directory: nil)
        }
        var files: [String: File] = [:]
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names {
            let suffix = (name as NSString).pathExtension
            guard let type = contentTypes[suffix], let data = FileManager.default.contents(atPath: directory + "/" + name) else { continue }
            files[name] = File(body: ByteBuffer(bytes: data), contentType: type)
        }
        return ConsoleAssets(files: files, directory: directory)
    }

    /// The `assets` directory of the Tributary resource bundle beside the running executable.
    static func locate() -> String? {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let bases = [Bundle.main.bundleURL, executable]
        let bundles = ["tributary_Tributary.resources", "tributary_Tributary.bundle/Contents/Resources", "tributary_Tributary.bundle"]
        for base in bases {
            for bundle in bundles {
                let path = base.appendingPathComponent(bundle).appendingPathComponent("assets").path
                if FileManager.default.fileExists(atPath: path + "/index.html") { return path }
            }
        }
        return nil
    }

    func response(_ name: String) throws -> Response {
        guard let file = files[name] else {
            throw APIError(
                .notFound,
                code: directory == nil ? "CONSOLE_UNAVAILABLE" : "NOT_FOUND",
                detail: directory == nil
                    ? "The console's files were not found next to the tributary executable (tributary_Tributary.resources)"
                    : "No console file \(name.prefix(100))"
            )
        }
        var headers = Self.securityHeaders
        headers[.contentType] = file.contentType
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: file.body))
    }

    /// `GET /` (the console), `/docs` (the API reference) and `/console/<file>`, on `group`
    /// (open: the pages hold no data; the API behind them needs the token).
    public func addRoutes<Context: RequestContext>(to group: RouterGroup<Context>) {
        group.get("/") { _, _ in try response("index.html") }
        group.get("/docs") { _, _ in try response("docs.html") }
        group.get("/console/:file") { _, context in try response(context.parameters.get("file") ?? "") }
    }
}
