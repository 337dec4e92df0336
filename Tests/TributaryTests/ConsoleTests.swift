import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// The console and docs pages as served (the browser tests in scripts/browser-test drive them).
@Suite struct ConsoleTests {
    @Test func pagesAndAssetsAreServedWithTheirTypesAndAStrictPolicyWithoutAToken() async throws {
        try await TestBackend.sqlite.withConfig { base in
            var config = base
            config.apiTokens = ["console-test-token"]
            try await TestServer(config: config).run { client in
                for (path, type, marker) in [
                    ("/", "text/html; charset=utf-8", "/console/console.js"), ("/docs", "text/html; charset=utf-8", "/console/docs.js"),
                    ("/console/console.js", "text/javascript; charset=utf-8", "/api/realtime"),
                    ("/console/console.css", "text/css; charset=utf-8", "prefers-color-scheme"),
                    ("/console/docs.js", "text/javascript; charset=utf-8", "/openapi.json"),
                ] {
                    let response = try await client.execute(uri: path, method: .get)
                    #expect(response.status == .ok, "\(path)")
                    #expect(response.headers[.contentType] == type, "\(path)")
                    let policy = response.headers[.contentSecurityPolicy] ?? ""
                    #expect(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "\(path): \(policy)")
                    #expect(response.headers[.xContentTypeOptions] == "nosniff")
                    #expect(String(buffer: response.body).contains(marker), "\(path) is the right file")
                }
                // The pages hold no data and need no token; the API behind them does.
                #expect(try await client.execute(uri: "/api/connectors", method: .get).status == .unauthorized)
                for path in ["/console/nope.js", "/console/..%2F..%2FPackage.swift", "/console/", "/console/index.html.bak"] {
                    let response = try await client.execute(uri: path, method: .get)
                    #expect(response.status == .notFound, "\(path)")
                }
            }
        }
    }

    /// No inline script or style and no external resource: the policy above would block them.
    @Test func pagesUseOnlyTheirOwnFiles() throws {
        let directory = try #require(ConsoleAssets.locate())
        for page in ["index.html", "docs.html"] {
            let html = try String(contentsOfFile: directory + "/" + page, encoding: .utf8)
            #expect(!html.contains("<script>") && !html.contains("<style"), "\(page): inline script or style")
            #expect(!html.contains(" on") || html.range(of: #"\son[a-z]+="#, options: .regularExpression) == nil, "\(page): inline handler")
            #expect(!html.contains("http://") && !html.contains("https://"), "\(page): an external resource")
        }
    }
}
