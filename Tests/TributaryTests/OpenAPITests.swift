import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ServiceLifecycle
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// The OpenAPI document is true to the router: every route documented, nothing documented that is not routed.
@Suite struct OpenAPITests {
    @Test func everyRouteIsDocumentedAndNothingElse() async throws {
        try await TestBackend.sqlite.withConfig { config in
            let logger = Logger(label: "openapi-test")
            let store = try await makeStore(config, logger: logger)
            let running = Task { try await store.run() }
            defer { running.cancel() }
            let pipeline = Pipeline(config: config, store: store, secretBox: try makeSecretBox(config), logger: logger)
            let table = RouteTable<APIRequestContext>()
            _ = buildRouter(config: config, store: store, service: pipeline.service, metrics: pipeline.exporter, routes: table)
            let routed = Set(table.routes.map { "\($0.method.rawValue) \($0.path)" })
            #expect(routed.count > 15)
            #expect(routed.subtracting(OpenAPIDocument.operations).isEmpty, "routes missing from the document")
            #expect(OpenAPIDocument.operations.subtracting(routed).isEmpty, "documented operations that are not routed")
            running.cancel()
            try? await running.value
        }
    }

    @Test func theDocumentIsServedAndItsReferencesResolve() async throws {
        try await TestBackend.sqlite.withConfig { config in
            try await TestServer(config: config).run { client in
                let response = try await client.json(.get, "/openapi.json")
                #expect(response.status == .ok)
                #expect(response.body["openapi"] == "3.1.0")
                let schemas = Set(response.body["components"]?["schemas"]?.objectValue?.keys ?? [])
                let text = response.body.serialized
                for match in text.matches(of: /"#\/components\/schemas\/(\w+)"/) {
                    #expect(schemas.contains(String(match.1)), "unresolved $ref \(match.1)")
                }
            }
        }
    }
}
