import Dispatch
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Synchronization
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// `/metrics` while data flows, and JSON logs that never carry a secret.
@Suite(.timeLimit(.minutes(3))) struct ObservabilityTests {
    /// The value of one series (`name{labels}`) in a Prometheus text exposition.
    static func value(_ text: String, _ series: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    /// The `tributary_*` metric names in the shipped Prometheus rules.
    static func alertRuleMetrics() throws -> Set<String> {
        let rules = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("deploy/prometheus/tributary-rules.yml")
        let text = try String(contentsOf: rules, encoding: .utf8)
        let names = Set(text.matches(of: /tributary_[a-z_]+/).map { String($0.output) })
        #expect(names.count >= 10, "the rules file was read")
        return names
    }

    @Test func metricsMoveWhenMessagesFlow() async throws {
        var options = SimulatorOptions()
        options.rate = 2000
        options.total = 600
        let exchange = FakeExchange(options: options)
        try await exchange.withRunning { port in
            try await TestBackend.sqlite.withConfig { config in
                try await TestServer(config: StreamingTests.fast(config)).run { client in
                    let listener = try await RealtimeListener(port: client.port!)
                    defer { listener.close() }
                    let created = try await client.json(.post, "/api/connectors", body: StreamingTests.okxBody(port: port))
                    let id = try #require(created.body["connector_id"]?.stringValue)
                    try await client.json(.post, "/api/connectors/\(id)/start")
                    func scrape() async throws -> String {
                        let response = try await client.execute(uri: "/metrics", method: .get)
                        #expect(response.status == .ok)
                        #expect(response.headers[.contentType]?.hasPrefix("text/plain") == true)
                        return String(buffer: response.body)
                    }
                    let stored = "tributary_connector_messages_stored_total{connector_id=\"\(id)\"}"
                    #expect(try await eventually { Self.value(try await scrape(), stored) ?? 0 > 0 }, "stored counter moved")
                    #expect(try await eventually { Self.value(try await scrape(), stored) == 600 }, "and reached every message")
                    let text = try await scrape()
                    #expect(Self.value(text, "tributary_connector_messages_received_total{connector_id=\"\(id)\"}") == 600)
                    #expect(Self.value(text, "tributary_realtime_clients") == 1)
                    #expect(Self.value(text, "tributary_write_queue_depth") == 0)
                    #expect((Self.value(text, "tributary_batch_flush_size_count") ?? 0) >= 1)
                    #expect(Self.value(text, "tributary_batch_flush_size_sum") == 600)
                    #expect((Self.value(text, "tributary_batch_flush_duration_seconds_count") ?? 0) >= 1)
                    let created200 = #"tributary_http_requests_total{method="POST",route="/api/connectors",status="200"}"#
                    #expect(Self.value(text, created200) == 1, "requests counted by route pattern")
                    let started = #"tributary_http_requests_total{method="POST",route="/api/connectors/{connector_id}/start",status="200"}"#
                    #expect(Self.value(text, started) == 1)
                    #expect(text.contains("# TYPE tributary_http_request_duration_seconds histogram"))
                    try await client.json(.get, "/api/connectors/conn_missing")
                    let missing = #"tributary_http_requests_total{method="GET",route="/api/connectors/{connector_id}",status="404"}"#
                    #expect(Self.value(try await scrape(), missing) == 1, "errors are counted with their status")
                    // Every metric the shipped alerting rules use is one this server exports.
                    let exported = try await scrape()
                    for name in try Self.alertRuleMetrics() {
                        #expect(exported.contains("\n# TYPE \(name) "), "deploy/prometheus/tributary-rules.yml uses \(name), which /metrics lacks")
                    }
                    try await client.json(.post, "/api/connectors/\(id)/stop")
                }
            }
        }
    }

    @Test func jsonLogsAreOneObjectPerLineAndCarryNoSecret() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tributary-logs-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let token = "api-token-that-must-not-leak-1"
        let (process, output) = try CommandLineTests.launch(
            [
                "serve", "--port", "0", "--data-dir", directory, "--log-format", "json", "--log-level", "trace", "--api-tokens", token,
                "--allow-private-targets", "127.0.0.1/32",
            ]
        )
        defer { if process.isRunning { process.terminate() } }
        // Drained all along on a dispatch thread (a full pipe would block the server's logging).
        let collected = Mutex("")
        let reader = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            while true {
                let data = output.fileHandleForReading.availableData
                if data.isEmpty { break }
                collected.withLock { $0 += String(decoding: data, as: UTF8.self) }
            }
            reader.signal()
        }
        #expect(try await eventually { collected.withLock { $0.contains("Tributary is listening") } })
        let started = collected.withLock { $0 }
        let port = try #require(
            started.firstRange(of: /127\.0\.0\.1:(\d+)/).flatMap { Int(started[$0].split(separator: ":").last ?? "") },
            "port in: \(started)"
        )
        let client = BenchHTTPClient(port: port, token: token)
        // Listening comes before the schema is migrated: wait until it is ready for writes.
        #expect(try await eventually { (try? await client.status("/ready")) == 200 })
        let secrets = ["key-must-not-leak-1", "secret-must-not-leak-1", "passphrase-must-not-leak", "header-value-must-not-leak"]
        let body = JSONValue.object([
            "name": "leaky", "connector_type": "rest", "exchange": "okx", "polling_interval": .number(100),
            "api_url": "http://127.0.0.1:9/api/v5/account/balance", "auth_type": "hmac", "api_key": .string(secrets[0]),
            "api_secret": .string(secrets[1]), "passphrase": .string(secrets[2]), "headers": .object(["X-Extra": .string(secrets[3])]),
        ])
        let id = try await client.createAndStart(body)
        _ = try await client.send("POST", "/api/connectors/\(id)/test", nil)
        try await Task.sleep(for: .seconds(1))
        _ = try await client.send("POST", "/api/connectors/\(id)/stop", nil)
        process.terminate()
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                reader.wait()
                continuation.resume()
            }
        }
        let lines = collected.withLock { $0 }.split(separator: "\n").filter { !$0.isEmpty }
        #expect(lines.count > 5)
        #expect(lines.contains { $0.contains("poll failed") }, "the failing polls were logged")
        for line in lines {
            let object = try? JSONValue.parse(String(line))
            #expect(object?["time"]?.stringValue != nil && object?["level"]?.stringValue != nil && object?["message"]?.stringValue != nil, "\(line)")
            for secret in secrets + [token] { #expect(!line.contains(secret), "\(line)") }
        }
    }
}
