import Foundation
import Logging
import PostgresNIO
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// The storage backends every storage and API test runs against.
///
/// PostgreSQL comes from `TRIBUTARY_TEST_POSTGRES_URL` (scripts/test starts a throwaway cluster and
/// sets it); each test gets a fresh database. Without it the PostgreSQL cases are left out and
/// `PostgresAvailabilityTests` reports the skip, or fails when `TRIBUTARY_REQUIRE_POSTGRES=1`.
enum TestBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    static var adminURL: String? { ProcessInfo.processInfo.environment["TRIBUTARY_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 } }
    static var postgresRequired: Bool { ProcessInfo.processInfo.environment["TRIBUTARY_REQUIRE_POSTGRES"] == "1" }

    /// The backends to run: SQLite always, PostgreSQL when configured (or required, so that its absence fails).
    static var enabled: [TestBackend] { adminURL != nil || postgresRequired ? [.sqlite, .postgres] : [.sqlite] }

    static let testKey = EncryptionKey.generate()

    /// A configuration on a new, empty database of this backend; the database is removed afterwards.
    func withConfig<Value>(_ body: (AppConfig) async throws -> Value) async throws -> Value {
        var config = AppConfig()
        config.host = "127.0.0.1"
        config.port = 0
        config.encryptionKey = Self.testKey
        config.poolMinimum = 0
        config.poolMaximum = 4
        config.poolTimeout = .seconds(5)
        // Fake exchanges and APIs listen on 127.0.0.1.
        config.runtime.outbound = OutboundPolicy(allowed: [CIDR("127.0.0.1/32")].compactMap { $0 })
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tributary-test-\(UUID().uuidString)").path
        config.dataDirectory = directory
        defer { try? FileManager.default.removeItem(atPath: directory) }
        switch self {
        case .sqlite:
            config.database = .sqlite(path: directory + "/tributary.sqlite")
            return try await body(config)
        case .postgres:
            guard let adminURL = Self.adminURL else {
                throw TestSetupError("TRIBUTARY_REQUIRE_POSTGRES=1 but TRIBUTARY_TEST_POSTGRES_URL is not set: run the tests with scripts/test")
            }
            let admin = try PostgresSettings(url: adminURL)
            let name = "tributary_test_\(UUID().uuidString.prefix(8).lowercased())"
            try await Self.admin(admin) { client in
                try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"))
            }
            var settings = admin
            settings.database = name
            config.database = .postgres(settings)
            do {
                let value = try await body(config)
                try await Self.dropDatabase(name, admin: admin)
                return value
            } catch {
                try? await Self.dropDatabase(name, admin: admin)
                throw error
            }
        }
    }

    static func dropDatabase(_ name: String, admin: PostgresSettings) async throws {
        try await Self.admin(admin) { client in
            try await client.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"))
        }
    }

    /// Runs `body` with a short-lived client on the given database.
    @discardableResult static func admin<Value: Sendable>(
        _ settings: PostgresSettings,
        _ body: @escaping @Sendable (PostgresClient) async throws -> Value
    ) async throws -> Value {
        let client = PostgresClient(
            configuration: .init(
                host: settings.host,
                port: settings.port,
                username: settings.username,
                password: settings.password,
                database: settings.database,
                tls: .disable
            )
        )
        return try await withThrowingTaskGroup(of: Value?.self) { group in
            group.addTask {
                await client.run()
                return nil
            }
            let value = try await body(client)
            group.cancelAll()
            return value
        }
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

@Suite struct PostgresAvailabilityTests {
    @Test func postgresSuitesRun() throws {
        if TestBackend.adminURL == nil {
            if TestBackend.postgresRequired {
                Issue.record("TRIBUTARY_REQUIRE_POSTGRES=1 but no PostgreSQL: the PostgreSQL suites did not run")
            } else {
                try Test.cancel("PostgreSQL is not available: the PostgreSQL suites are SKIPPED. Run scripts/test to include them.")
            }
        }
    }
}
