import Foundation
import HTTPTypes
import Logging
import PostgresNIO
import Testing

@testable import Tributary

/// The server without its database: it listens and says so, and catches up when the database comes.
@Suite struct DurabilityTests {
    @Test func theServerListensBeforeItsDatabaseExistsAndBecomesReadyWhenItDoes() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        try await TestBackend.postgres.withConfig { base in
            guard case .postgres(var late) = base.database, let adminURL = TestBackend.adminURL else { return }
            let admin = try PostgresSettings(url: adminURL)
            // A database that does not exist yet: PostgreSQL answers 3D000, as good as down.
            late.database = "tributary_late_\(UUID().uuidString.prefix(8).lowercased())"
            let settings = late
            var config = base
            config.database = .postgres(settings)
            try await TestServer(config: config).run(waitForReady: false) { client in
                #expect(try await client.json(.get, "/health").status == .ok)
                #expect(try await client.json(.get, "/ready").status == .serviceUnavailable)
                let listed = try await client.json(.get, "/api/connectors")
                #expect(listed.status == .serviceUnavailable)
                #expect(listed.body["error_code"] == "DATABASE_UNAVAILABLE")

                try await TestBackend.admin(admin) { try await $0.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(settings.database)")) }
                let deadline = ContinuousClock.now + .seconds(20)
                var ready = false
                while !ready, ContinuousClock.now < deadline {
                    ready = try await client.json(.get, "/ready").status == .ok
                    if !ready { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(ready, "migrated once the database appeared")
                #expect(try await client.json(.get, "/api/connectors").status == .ok)
            }
            try await TestBackend.dropDatabase(settings.database, admin: admin)
        }
    }
}
