import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Tributary
import TributarySimulator

/// API calls of the benchmark and the demo, made over HTTP like any user's.
struct BenchHTTPClient {
    let port: Int
    var token: String?

    init(port: Int, token: String? = nil) {
        self.port = port
        self.token = token
    }

    /// Creates the connector, or updates the existing one of that name (the demo's ports change
    /// every run), and starts it.
    func createOrUpdateAndStart(_ body: JSONValue) async throws -> String {
        let list = try await send("GET", "/api/connectors?limit=1000", nil)
        if let existing = list["data"]?.arrayValue?.first(where: { $0["name"] == body["name"] }), let id = existing["connector_id"]?.stringValue {
            _ = try await send("PUT", "/api/connectors/\(id)", body.serialized)
            _ = try await send("POST", "/api/connectors/\(id)/restart", nil)
            return id
        }
        return try await createAndStart(body)
    }

    func createAndStart(_ body: JSONValue) async throws -> String {
        let created = try await send("POST", "/api/connectors", body.serialized)
        guard let id = created["connector_id"]?.stringValue else {
            throw ConfigError("could not create the benchmark connector: \(created.serialized)")
        }
        _ = try await send("POST", "/api/connectors/\(id)/start", nil)
        return id
    }

    /// The status code of a GET of `path`.
    func status(_ path: String) async throws -> Int {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(5))
        _ = try await response.body.collect(upTo: 1 << 20)
        return Int(response.status.code)
    }

    /// The value of an unlabelled metric on `/metrics` (nil when absent).
    func metric(_ name: String) async throws -> Double? { try await metrics([name])[name] }

    /// The values of `names` (each a sample's name with its labels, as `/metrics` prints it), from
    /// one read of `/metrics`; a name not found is left out.
    func metrics(_ names: [String]) async throws -> [String: Double] {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics"), timeout: .seconds(5))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 22))
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") {
            guard let space = line.lastIndex(of: " "), names.contains(String(line[..<space])) else { continue }
            values[String(line[..<space])] = Double(line[line.index(after: space)...])
        }
        return values
    }

    /// `tributary_connector_messages_stored_total` of one connector (0 before its first commit).
    func storedMessages(_ connectorID: String) async throws -> Int {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics"), timeout: .seconds(5))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 22))
        let label = "connector_id=\"\(connectorID)\""
        for line in text.split(separator: "\n") where line.hasPrefix("tributary_connector_messages_stored_total{") && line.contains(label) {
            guard let space = line.lastIndex(of: " ") else { continue }
            return Int(line[line.index(after: space)...]) ?? 0
        }
        return 0
    }

    func send(_ method: String, _ path: String, _ body: String?) async throws -> JSONValue {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = .init(rawValue: method)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 1 << 22)
        return try JSONValue.parse(bytes.readableBytesView)
    }

    /// Rows stored for the connector and distinct source ids, read with a store of its own.
    func integrity(_ connectorID: String, config: AppConfig) async throws -> (stored: Int, distinct: Int) {
        let counts = try await withStore(config, logger: Logger(label: "tributary.bench")) { store in
            try await store.messageCounts(connectorID: connectorID)
        }
        return (counts.rows, counts.distinctSources)
    }
}
