import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import InMemoryLogging
import Logging
import NIOCore
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// A server under test: the real application on 127.0.0.1 and an ephemeral port, logging into memory.
struct TestServer {
    let config: AppConfig
    let logs = InMemoryLogHandler()

    var logger: Logger {
        var handler = logs
        handler.logLevel = .trace
        return Logger(label: "tributary-test") { _ in handler }
    }

    /// Every log line with its metadata, for asserting that no secret was logged.
    var logText: String {
        logs.entries.map { "\($0.level) \($0.message) \($0.metadata)" }.joined(separator: "\n")
    }

    /// Builds the application from `config` and runs `body` with a client connected through a real socket.
    /// With `waitForReady`, `body` starts once `/ready` answers 200 (the schema is migrated).
    func run<Value: Sendable>(
        waitForReady: Bool = true,
        _ body: @Sendable @escaping (any TestClientProtocol) async throws -> Value
    ) async throws -> Value {
        let app = try await buildApplication(config, logger: logger)
        return try await app.test(.live) { client in
            if waitForReady {
                let deadline = ContinuousClock.now + .seconds(30)
                while try await client.execute(uri: "/ready", method: .get).status != .ok, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            return try await body(client)
        }
    }
}

extension TestClientProtocol {
    /// Sends a request with an optional JSON body and returns the status and the parsed JSON response.
    @discardableResult
    func json(
        _ method: HTTPRequest.Method,
        _ uri: String,
        body: String? = nil,
        headers: HTTPFields = [:]
    ) async throws -> (status: HTTPResponse.Status, body: JSONValue, headers: HTTPFields) {
        var headers = headers
        if body != nil { headers[.contentType] = "application/json" }
        let response = try await execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        let text = String(buffer: response.body)
        let json = text.isEmpty ? JSONValue.null : try JSONValue.parse(text)
        return (response.status, json, response.headers)
    }
}

/// A valid connector body, with overrides merged in. Its URL is a closed local port: tests never
/// reach the internet, and a started connector just keeps reconnecting.
func connectorBody(_ name: String = "okx-btc-trades", _ overrides: JSONObject = [:]) -> String {
    var object: JSONObject = [
        "name": .string(name),
        "connector_type": "websocket",
        "exchange": "okx",
        "api_url": "ws://127.0.0.1:9/ws/v5/public",
        "subscription_message": .object(["op": "subscribe", "args": .array([.object(["channel": "trades", "instId": "BTC-USDT"])])]),
    ]
    for (key, value) in overrides { object[key] = value }
    return JSONValue.object(object).serialized
}
