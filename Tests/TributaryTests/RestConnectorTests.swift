import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// REST polling end to end: connectors created through the API poll a local fake API (real
/// sockets), sign their requests, and store what they get.
@Suite(.timeLimit(.minutes(3))) struct RestConnectorTests {
    static func fast(_ config: AppConfig) -> AppConfig {
        var config = StreamingTests.fast(config)
        config.runtime.restTimeout = .seconds(5)
        return config
    }

    static func body(_ name: String, _ url: String, _ extra: JSONObject = [:]) -> String {
        var object: JSONObject = [
            "name": .string(name), "connector_type": "rest", "api_url": .string(url), "polling_interval": .number(100),
        ]
        for (key, value) in extra { object[key] = value }
        return JSONValue.object(object).serialized
    }

    static func create(_ client: some TestClientProtocol, _ body: String, start: Bool = true) async throws -> String {
        let created = try await client.json(.post, "/api/connectors", body: body)
        #expect(created.status == .ok, "\(created.body)")
        let id = try #require(created.body["connector_id"]?.stringValue)
        if start { try await client.json(.post, "/api/connectors/\(id)/start") }
        return id
    }

    static func connector(_ client: some TestClientProtocol, _ id: String) async throws -> JSONValue {
        try await client.json(.get, "/api/connectors/\(id)").body["data"] ?? .null
    }

    /// The `data` column of a connector's poll rows, parsed.
    static func rows(_ config: AppConfig, _ id: String) async throws -> [JSONValue] {
        try await RawDatabase.strings(config, "SELECT CAST(data AS TEXT) FROM api_connector_data WHERE connector_id = '\(id)' ORDER BY id")
            .compactMap { $0.flatMap { try? JSONValue.parse($0) } }
    }

    @Test(arguments: TestBackend.enabled)
    func publicAndSignedEndpointsStoreExactRows(_ backend: TestBackend) async throws {
        let api = FakeAPI()
        try await api.withRunning { apiPort in
            try await backend.withConfig { config in
                let config = Self.fast(config)
                let server = TestServer(config: config)
                try await server.run { client in
                    let base = "http://127.0.0.1:\(apiPort)"
                    let cases: [(String, String, JSONObject, String)] = [
                        ("okx-public", base + "/api/v5/market/ticker?instId=BTC-USDT", ["exchange": "okx"], "43250.123456789"),
                        (
                            "okx-signed", base + "/private/api/v5/market/trades?instId=BTC-USDT",
                            [
                                "exchange": "okx", "auth_type": "hmac", "api_key": .string(FakeAPI.okxKey), "api_secret": .string(FakeAPI.okxSecret),
                                "passphrase": .string(FakeAPI.okxPassphrase),
                            ], "29963.123456789"
                        ),
                        (
                            "binance-signed", base + "/private/api/v3/ticker/price",
                            [
                                "exchange": "binance", "auth_type": "hmac", "api_key": .string(FakeAPI.binanceKey),
                                "api_secret": .string(FakeAPI.binanceSecret), "query_params": .object(["symbol": "BTCUSDT"]),
                            ], "65000.12345678"
                        ),
                        ("api-key", base + "/apikey/ticker", ["auth_type": "api_key", "api_key": .string(FakeAPI.plainKey)], "3500.000000001"),
                        ("bearer", base + "/bearer/ticker", ["auth_type": "bearer", "bearer_token": .string(FakeAPI.bearerToken)], "150.5"),
                    ]
                    var ids: [(String, String)] = []
                    for (name, url, extra, price) in cases {
                        ids.append((try await Self.create(client, Self.body(name, url, extra)), price))
                    }
                    for (id, price) in ids {
                        #expect(try await eventually { try await Self.rows(config, id).count >= 3 }, "\(id) polled and stored")
                        let rows = try await Self.rows(config, id)
                        let first = try #require(rows.first)
                        let prices = first["price"]?.stringValue ?? first["records"]?[0]?["price"]?.stringValue
                        #expect(prices == price, "exact price stored for \(id): \(first)")
                        let connector = try await Self.connector(client, id)
                        #expect(connector["status"]?.stringValue == "running")
                        #expect(connector["last_error"] == .null || connector["last_error"] == nil)
                    }
                    // The OKX trades came in every poll, but each trade is one websocket_messages row.
                    let trades = ids[1].0
                    #expect(
                        try await RawDatabase.strings(
                            config,
                            "SELECT CAST(price AS TEXT) FROM websocket_messages WHERE connector_id = '\(trades)' ORDER BY source_id"
                        ) == ["29963.123456789", "29963.2"]
                    )
                    let raw = try await RawDatabase.strings(
                        config,
                        "SELECT CAST(raw_response AS TEXT) FROM api_connector_data WHERE connector_id = '\(trades)' LIMIT 1"
                    )
                    #expect(raw.first??.contains("242720720") == true, "raw_response kept")
                    for (id, _) in ids { try await client.json(.post, "/api/connectors/\(id)/stop") }
                }
                #expect(!server.logText.contains(FakeAPI.okxSecret) && !server.logText.contains(FakeAPI.binanceSecret))
            }
        }
    }

    @Test func aWrongSecretIsRejectedAndReported() async throws {
        let api = FakeAPI()
        try await api.withRunning { apiPort in
            try await TestBackend.sqlite.withConfig { config in
                try await TestServer(config: Self.fast(config)).run { client in
                    let id = try await Self.create(
                        client,
                        Self.body(
                            "okx-wrong",
                            "http://127.0.0.1:\(apiPort)/private/api/v5/market/trades?instId=BTC-USDT",
                            [
                                "exchange": "okx", "auth_type": "hmac", "api_key": .string(FakeAPI.okxKey), "api_secret": "not-the-secret-123",
                                "passphrase": .string(FakeAPI.okxPassphrase),
                            ]
                        )
                    )
                    #expect(try await eventually { try await Self.connector(client, id)["status"]?.stringValue == "error" })
                    let connector = try await Self.connector(client, id)
                    let lastError = connector["last_error"]?.stringValue ?? ""
                    #expect(lastError.contains("HTTP 401") && lastError.contains("Invalid Sign"), "\(lastError)")
                    #expect(!connector.serialized.contains("not-the-secret-123"))
                    #expect(try await Self.rows(config, id).isEmpty)
                    // The test endpoint reports the same, storing nothing.
                    let tested = try await client.json(.post, "/api/connectors/\(id)/test")
                    #expect(tested.status == .ok)
                    #expect(tested.body["data"]?["ok"] == false)
                    #expect(tested.body["data"]?["status_code"] == .number("401"))
                    #expect(!tested.body.serialized.contains("not-the-secret-123"))
                }
            }
        }
    }

    @Test func retryAfterIsHonoured() async throws {
        let api = FakeAPI()
        try await api.withRunning { apiPort in
            try await TestBackend.sqlite.withConfig { config in
                try await TestServer(config: Self.fast(config)).run { client in
                    let id = try await Self.create(client, Self.body("limited", "http://127.0.0.1:\(apiPort)/limited"))
                    #expect(try await eventually { api.requests("/limited").count >= 3 })
                    let times = api.requests("/limited")
                    let spacing = times[1] - times[0]
                    #expect(spacing >= .milliseconds(950), "waited for Retry-After: 1 (\(spacing)), not the 100 ms interval")
                    #expect(times[2] - times[1] < .milliseconds(900), "then back to the polling interval")
                    #expect(try await eventually { try await Self.connector(client, id)["status"]?.stringValue == "running" })
                    try await client.json(.post, "/api/connectors/\(id)/stop")
                }
            }
        }
    }

    @Test func aSlowServerNeverGetsOverlappingPolls() async throws {
        let api = FakeAPI()
        try await api.withRunning { apiPort in
            try await TestBackend.sqlite.withConfig { config in
                try await TestServer(config: Self.fast(config)).run { client in
                    // 300 ms answers, 100 ms interval: a poll must wait for the previous answer.
                    let id = try await Self.create(client, Self.body("slow", "http://127.0.0.1:\(apiPort)/slow"))
                    #expect(try await eventually { try await Self.rows(config, id).count >= 4 })
                    try await client.json(.post, "/api/connectors/\(id)/stop")
                    #expect(api.maxInFlight == 1)
                    let times = api.requests("/slow")
                    for (earlier, later) in zip(times, times.dropFirst()) { #expect(later - earlier >= .milliseconds(290)) }
                    let metrics = try await Self.connector(client, id)["performance_metrics"]
                    #expect((Int(metrics?["polls"].text ?? "") ?? 0) >= 4)
                    #expect((Double(metrics?["last_response_time_ms"].text ?? "") ?? 0) >= 290)
                }
            }
        }
    }

    @Test func nonJSONAndOversizedResponsesAreErrorsAndPollingGoesOn() async throws {
        let api = FakeAPI()
        try await api.withRunning { apiPort in
            try await TestBackend.sqlite.withConfig { config in
                var configured = Self.fast(config)
                configured.runtime.restMaxResponseBytes = 4096
                let config = configured
                try await TestServer(config: config).run { client in
                    let html = try await Self.create(client, Self.body("html", "http://127.0.0.1:\(apiPort)/html"))
                    let big = try await Self.create(client, Self.body("big", "http://127.0.0.1:\(apiPort)/big"))
                    #expect(try await eventually { api.requests("/html").count >= 3 && api.requests("/big").count >= 3 }, "still polling")
                    let htmlConnector = try await Self.connector(client, html)
                    #expect(htmlConnector["last_error"]?.stringValue?.contains("not JSON") == true, "\(htmlConnector)")
                    #expect(htmlConnector["status"]?.stringValue == "running")
                    // The API has answered three times; the connector counts a failure once it has read the answer.
                    let failed = try await eventually {
                        (Int(try await Self.connector(client, big)["performance_metrics"]?["poll_failures"].text ?? "") ?? 0) >= 3
                    }
                    #expect(failed, "three failed polls counted")
                    let bigConnector = try await Self.connector(client, big)
                    #expect(bigConnector["last_error"]?.stringValue?.contains("larger than 4096 bytes") == true, "\(bigConnector)")
                    #expect(try await Self.rows(config, html).isEmpty)
                    try await client.json(.post, "/api/connectors/\(html)/stop")
                    try await client.json(.post, "/api/connectors/\(big)/stop")
                }
            }
        }
    }

    @Test func theTestEndpointShowsRecordsAndStoresNothing() async throws {
        let api = FakeAPI()
        try await api.withRunning { apiPort in
            try await TestBackend.sqlite.withConfig { config in
                try await TestServer(config: Self.fast(config)).run { client in
                    let id = try await Self.create(
                        client,
                        Self.body("trades", "http://127.0.0.1:\(apiPort)/api/v5/market/trades?instId=BTC-USDT", ["exchange": "okx"]),
                        start: false
                    )
                    let tested = try await client.json(.post, "/api/connectors/\(id)/test")
                    let data = try #require(tested.body["data"])
                    #expect(data["ok"] == true)
                    #expect(data["status_code"] == .number("200"))
                    #expect(data["record_count"] == .number("2"))
                    #expect(data["records"]?[0]?["source_id"]?.stringValue == "okx:trades:BTC-USDT:242720720")
                    #expect(data["records"]?[0]?["price"]?.stringValue == "29963.123456789")
                    #expect(try await Self.rows(config, id).isEmpty)
                    #expect(try await StreamingTests.count(config, id) == 0)
                    #expect(try await client.json(.post, "/api/connectors/conn_missing/test").status == .notFound)
                }
            }
        }
    }

    @Test func theTestEndpointReadsTheFirstWebSocketMessage() async throws {
        var options = SimulatorOptions()
        options.rate = 200
        let exchange = FakeExchange(options: options)
        try await exchange.withRunning { port in
            try await TestBackend.sqlite.withConfig { config in
                try await TestServer(config: Self.fast(config)).run { client in
                    let created = try await client.json(.post, "/api/connectors", body: StreamingTests.okxBody(port: port))
                    let id = try #require(created.body["connector_id"]?.stringValue)
                    let tested = try await client.json(.post, "/api/connectors/\(id)/test")
                    let data = try #require(tested.body["data"])
                    #expect(data["ok"] == true, "\(data)")
                    #expect(data["records"]?[0]?["message_type"]?.stringValue == "trade")
                    #expect(try await StreamingTests.count(config, id) == 0)
                }
            }
        }
    }

    /// A Bearer-protected endpoint that answers an account balance, not market data: every
    /// answer is stored with its raw response, and the connector is not in error for it.
    @Test(arguments: TestBackend.enabled)
    func everyAnsweredPollIsStoredEvenWithoutMarketData(_ backend: TestBackend) async throws {
        let api = FakeAPI()
        try await api.withRunning { port in
            try await backend.withConfig { config in
                let config = Self.fast(config)
                try await TestServer(config: config).run { client in
                    let body = Self.body(
                        "balance",
                        "http://127.0.0.1:\(port)/bearer/account",
                        ["auth_type": "bearer", "bearer_token": .string(FakeAPI.bearerToken)]
                    )
                    let id = try await Self.create(client, body)
                    #expect(try await eventually { try await Self.rows(config, id).count >= 3 })
                    try await client.json(.post, "/api/connectors/\(id)/stop")
                    let rows = try await Self.rows(config, id)
                    #expect(rows.allSatisfy { $0["record_count"] == .number(0) && $0["extraction_error"]?.stringValue != nil }, "\(rows)")
                    let raw = try await RawDatabase.strings(
                        config,
                        "SELECT CAST(raw_response AS TEXT) FROM api_connector_data WHERE connector_id = '\(id)' LIMIT 1"
                    )
                    #expect(raw.first??.contains("balances") == true)
                    let data = try await Self.connector(client, id)
                    #expect(data["last_error"] == .null, "not a connector error: \(data)")
                    #expect((data["performance_metrics"]?["poll_extraction_failures"]?.int64 ?? 0) >= 3)
                    #expect(data["performance_metrics"]?["messages_failed"] == .number(0))
                    let tested = try await client.json(.post, "/api/connectors/\(id)/test").body["data"]
                    #expect(tested?["ok"] == true)
                    #expect(tested?["extraction_error"]?.stringValue?.contains("no market data") == true)
                }
            }
        }
    }

    @Test func aRefusedConnectionFailsAtOnce() async throws {
        try await TestBackend.sqlite.withConfig { config in
            try await TestServer(config: Self.fast(config)).run { client in
                // Port 9 is closed: polling keeps failing there, and a test request must say so at
                // once rather than wait out the 5 s request timeout behind the pool's retries.
                let id = try await Self.create(client, Self.body("refused", "http://127.0.0.1:9/ticker"))
                #expect(try await eventually { try await Self.connector(client, id)["status"]?.stringValue == "reconnecting" })
                let started = ContinuousClock.now
                let tested = try await client.json(.post, "/api/connectors/\(id)/test")
                #expect(ContinuousClock.now - started < .seconds(2))
                #expect(tested.body["data"]?["ok"] == false)
                #expect(tested.body["data"]?["error"]?.stringValue?.contains("request failed") == true, "\(tested.body)")
                // /test sends a request on demand: once per connector every 2 s at most.
                let again = try await client.json(.post, "/api/connectors/\(id)/test")
                #expect(again.status == .tooManyRequests)
                #expect(again.body["error_code"] == "RATE_LIMITED")
                #expect(again.headers[.retryAfter] != nil)
                try await client.json(.post, "/api/connectors/\(id)/stop")
            }
        }
    }
}
