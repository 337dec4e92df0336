import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// The connector management API through a real socket, on SQLite and on PostgreSQL.
@Suite(.timeLimit(.minutes(3))) struct ConnectorAPITests {
    @Test(arguments: TestBackend.enabled)
    func connectorLifecycle(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await TestServer(config: config).run { client in
                let created = try await client.json(.post, "/api/connectors", body: connectorBody())
                #expect(created.status == .ok)
                #expect(created.body["status"] == "success")
                #expect(created.body["message"]?.stringValue?.isEmpty == false)
                let id = try #require(created.body["connector_id"]?.stringValue)
                #expect(id.hasPrefix("conn_"))
                let data = try #require(created.body["data"])
                #expect(data["connector_id"] == .string(id))
                #expect(data["exchange"] == "okx")
                #expect(data["status"] == "stopped")
                #expect(data["desired_state"] == "stopped")
                #expect(data["performance_metrics"] == .object([:]))

                let list = try await client.json(.get, "/api/connectors")
                #expect(list.status == .ok)
                #expect(list.body["total"] == .number(1))
                #expect(list.body["data"]?[0]?["connector_id"] == .string(id))

                let updated = try await client.json(.put, "/api/connectors/\(id)", body: #"{"name":"renamed","polling_interval":2500}"#)
                #expect(updated.status == .ok)
                #expect(updated.body["data"]?["name"] == "renamed")
                #expect(updated.body["data"]?["polling_interval"] == .number(2500))
                #expect(updated.body["data"]?["api_url"] == "ws://127.0.0.1:9/ws/v5/public")

                let started = try await client.json(.post, "/api/connectors/\(id)/start")
                #expect(started.status == .ok)
                #expect(started.body["data"]?["desired_state"] == "running")
                #expect(["starting", "reconnecting"].contains(started.body["data"]?["status"]?.stringValue))
                #expect(started.body["data"]?["started_at"]?.stringValue != nil)
                let again = try await client.json(.post, "/api/connectors/\(id)/start")
                #expect(again.status == .ok, "start is idempotent")
                #expect(again.body["data"]?["started_at"] == started.body["data"]?["started_at"])

                // With PostgreSQL the start is applied by the lease owner's next period (woken at
                // once by NOTIFY); until then the status is the stored row, without live metrics.
                var status = try await client.json(.get, "/api/connectors/\(id)/status")
                let deadline = ContinuousClock.now + .seconds(10)
                while status.body["data"]?["performance_metrics"]?["messages_received"] == nil, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                    status = try await client.json(.get, "/api/connectors/\(id)/status")
                }
                #expect(status.status == .ok)
                #expect(["starting", "reconnecting"].contains(status.body["data"]?["status"]?.stringValue), "nothing listens on its port")
                #expect(status.body["data"]?["performance_metrics"]?["messages_received"] == .number(0))

                let stopped = try await client.json(.post, "/api/connectors/\(id)/stop")
                #expect(stopped.body["data"]?["status"] == "stopped")
                #expect(stopped.body["data"]?["desired_state"] == "stopped")
                #expect(try await client.json(.post, "/api/connectors/\(id)/stop").status == .ok, "stop is idempotent")
                let restarted = try await client.json(.post, "/api/connectors/\(id)/restart")
                #expect(restarted.body["data"]?["desired_state"] == "running")

                let deleted = try await client.json(.delete, "/api/connectors/\(id)")
                #expect(deleted.status == .ok)
                #expect(try await client.json(.get, "/api/connectors/\(id)").status == .notFound)
                #expect(try await client.json(.get, "/api/connectors").body["total"] == .number(0))
            }
        }
    }

    @Test(arguments: TestBackend.enabled)
    func listPaginatesWithLimitAndOffset(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await TestServer(config: config).run { client in
                for index in 0..<5 { try await client.json(.post, "/api/connectors", body: connectorBody("c\(index)")) }
                let page = try await client.json(.get, "/api/connectors?limit=2&offset=3")
                #expect(page.body["total"] == .number(5))
                #expect(page.body["data"]?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["c3", "c4"])
                let bad = try await client.json(.get, "/api/connectors?limit=0")
                #expect(bad.status == .badRequest)
                #expect(bad.body["errors"]?[0]?["field"] == "limit")
            }
        }
    }

    @Test(arguments: TestBackend.enabled)
    func errorsUseTheErrorBody(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await TestServer(config: config).run { client in
                func expectError(
                    _ response: (status: HTTPResponse.Status, body: JSONValue, headers: HTTPFields),
                    _ status: HTTPResponse.Status,
                    _ code: String
                ) {
                    #expect(response.status == status)
                    #expect(response.body["error_code"] == .string(code))
                    #expect(response.body["detail"]?.stringValue?.isEmpty == false)
                    #expect(response.body["timestamp"]?.stringValue.flatMap(Timestamp.parse) != nil)
                }
                let invalid = try await client.json(
                    .post,
                    "/api/connectors",
                    body: #"{"name":"x","connector_type":"rest","api_url":"ftp://h","polling_interval":50,"extra":1}"#
                )
                expectError(invalid, .badRequest, "VALIDATION_ERROR")
                let fields = invalid.body["errors"]?.arrayValue?.compactMap { $0["field"]?.stringValue } ?? []
                #expect(Set(fields) == ["api_url", "polling_interval", "extra"])
                #expect(invalid.body["errors"]?[0]?["problem"]?.stringValue?.isEmpty == false)

                expectError(try await client.json(.post, "/api/connectors", body: #"{"name": "x",}"#), .badRequest, "INVALID_JSON")
                expectError(try await client.json(.post, "/api/connectors", body: ""), .badRequest, "INVALID_JSON")
                expectError(try await client.json(.post, "/api/connectors", body: "[1,2]"), .badRequest, "VALIDATION_ERROR")

                for (method, path) in [
                    (HTTPRequest.Method.get, "/api/connectors/conn_missing"), (.put, "/api/connectors/conn_missing"),
                    (.delete, "/api/connectors/conn_missing"), (.post, "/api/connectors/conn_missing/start"),
                    (.get, "/api/connectors/conn_missing/status"), (.get, "/api/nothing-here"),
                ] {
                    expectError(try await client.json(method, path, body: method == .put ? #"{"name":"y"}"# : nil), .notFound, "NOT_FOUND")
                }

                let wrongMethod = try await client.json(.patch, "/api/connectors")
                expectError(wrongMethod, .methodNotAllowed, "METHOD_NOT_ALLOWED")
                #expect(wrongMethod.headers[.allow] == "GET, POST")
                let wrongOnItem = try await client.json(.post, "/api/connectors/conn_x")
                expectError(wrongOnItem, .methodNotAllowed, "METHOD_NOT_ALLOWED")
                #expect(wrongOnItem.headers[.allow] == "GET, PUT, DELETE")
                expectError(try await client.json(.get, "/api/connectors/conn_x/start"), .methodNotAllowed, "METHOD_NOT_ALLOWED")

                #expect(try await client.json(.post, "/api/connectors", body: connectorBody("taken")).status == .ok)
                expectError(try await client.json(.post, "/api/connectors", body: connectorBody("taken")), .conflict, "DUPLICATE_NAME")
                let other = try await client.json(.post, "/api/connectors", body: connectorBody("other"))
                let otherID = try #require(other.body["connector_id"]?.stringValue)
                expectError(try await client.json(.put, "/api/connectors/\(otherID)", body: #"{"name":"taken"}"#), .conflict, "DUPLICATE_NAME")

                let huge = connectorBody("big", ["request_body": .string(String(repeating: "x", count: 1_100_000))])
                expectError(try await client.json(.post, "/api/connectors", body: huge), .contentTooLarge, "PAYLOAD_TOO_LARGE")
                #expect(try await client.json(.get, "/api/connectors").body["total"] == .number(2))
            }
        }
    }

    @Test(arguments: TestBackend.enabled)
    func secretsAreNeverInResponsesStorageOrLogs(_ backend: TestBackend) async throws {
        let secrets = [
            "api_key": "AKIA-visible-tail-WXYZ", "api_secret": "s3cr3t-api-secret-value", "passphrase": "pass-phrase-value",
            "bearer_token": "bearer-token-value-123",
        ]
        let headerSecret = "header-secret-value-987"
        let querySecret = "query-secret-value-654"
        try await backend.withConfig { config in
            let server = TestServer(config: config)
            var overrides: JSONObject = [
                "connector_type": "rest", "api_url": "https://www.okx.com/api/v5/account/balance", "auth_type": "hmac",
                "headers": .object(["X-Extra-Key": .string(headerSecret)]), "query_params": .object(["token": .string(querySecret)]),
            ]
            for (key, value) in secrets { overrides[key] = .string(value) }
            let body = connectorBody("private", overrides)
            let responses = try await server.run { client in
                let created = try await client.json(.post, "/api/connectors", body: body)
                #expect(created.status == .ok)
                let id = try #require(created.body["connector_id"]?.stringValue)
                #expect(created.body["data"]?["api_key"] == "****WXYZ")
                #expect(created.body["data"]?["has_api_secret"] == true)
                #expect(created.body["data"]?["has_passphrase"] == true)
                #expect(created.body["data"]?["headers"]?["X-Extra-Key"] == "****-987")
                let renamed = try await client.json(
                    .put,
                    "/api/connectors/\(id)",
                    body: JSONValue.object(["name": "private-2", "api_key": "****WXYZ"]).serialized
                )
                #expect(renamed.body["data"]?["api_key"] == "****WXYZ", "the masked key sent back keeps the secret")
                let bad = try await client.json(.put, "/api/connectors/\(id)", body: #"{"polling_interval":1}"#)
                return [
                    created.body, renamed.body, bad.body, try await client.json(.get, "/api/connectors/\(id)").body,
                    try await client.json(.get, "/api/connectors").body, try await client.json(.get, "/api/connectors/\(id)/status").body,
                ]
                .map(\.serialized).joined()
            }
            let stored = try await RawDatabase.strings(
                config,
                "SELECT CONCAT(api_key, '|', api_secret, '|', passphrase, '|', bearer_token, '|', headers, '|', query_params) FROM api_connectors"
            )
            let storedText = stored.compactMap { $0 }.joined() + (try RawDatabase.sqliteFileText(config))
            #expect(stored.first??.contains("tsec1:") == true)
            for secret in Array(secrets.values) + [headerSecret, querySecret] {
                #expect(!responses.contains(secret), "\(secret) in a response")
                #expect(!storedText.contains(secret), "\(secret) stored in plaintext")
                #expect(!server.logText.contains(secret), "\(secret) in the logs")
            }
            #expect(!server.logText.isEmpty, "the server logged something, so the check means something")
        }
    }

    @Test(arguments: TestBackend.enabled)
    func connectorsSurviveARestart(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            let id = try await TestServer(config: config).run { client in
                let created = try await client.json(
                    .post,
                    "/api/connectors",
                    body: connectorBody("durable", ["api_key": "persisted-key-1234", "auth_type": "api_key"])
                )
                let id = try #require(created.body["connector_id"]?.stringValue)
                try await client.json(.post, "/api/connectors/\(id)/start")
                return id
            }
            try await TestServer(config: config).run { client in
                let fetched = try await client.json(.get, "/api/connectors/\(id)")
                #expect(fetched.status == .ok)
                #expect(fetched.body["data"]?["name"] == "durable")
                #expect(fetched.body["data"]?["desired_state"] == "running")
                #expect(fetched.body["data"]?["api_key"] == "****1234", "secrets decrypt after a restart")
            }
        }
    }

    @Test(arguments: TestBackend.enabled)
    func healthAndReadiness(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await TestServer(config: config).run { client in
                #expect(try await client.json(.get, "/health").body["status"] == "ok")
                let ready = try await client.json(.get, "/ready")
                #expect(ready.status == .ok)
                #expect(ready.body["status"] == "ready")
            }
        }
    }

    @Test func apiTokensProtectTheAPIButNotHealth() async throws {
        try await TestBackend.sqlite.withConfig { config in
            var config = config
            config.apiTokens = ["token-one", "token-two"]
            try await TestServer(config: config).run { client in
                let missing = try await client.json(.get, "/api/connectors")
                #expect(missing.status == .unauthorized)
                #expect(missing.body["error_code"] == "UNAUTHORIZED")
                #expect(try await client.json(.get, "/api/connectors", headers: [.authorization: "Bearer token-three"]).status == .unauthorized)
                #expect(
                    try await client.json(.get, "/api/connectors?token=token-one").status == .unauthorized,
                    "?token= is only for the realtime socket"
                )
                #expect(try await client.json(.get, "/api/connectors", headers: [.authorization: "Bearer token-two"]).status == .ok)
                #expect(try await client.json(.post, "/api/connectors", body: connectorBody()).status == .unauthorized)
                #expect(try await client.json(.get, "/health").status == .ok)
                #expect(try await client.json(.get, "/ready").status == .ok)
                // The realtime socket takes the token in the query string; without it the upgrade is refused.
                let listener = try await RealtimeListener(port: client.port!, query: "token=token-two")
                listener.close()
                await #expect(throws: (any Error).self) { try await RealtimeListener(port: client.port!) }
                await #expect(throws: (any Error).self) { try await RealtimeListener(port: client.port!, query: "token=wrong") }
            }
        }
    }
}
