import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The connectors that should be running, kept in the data directory (`connectors.json`, mode
/// 0600) so that a server started while its database is down can start them anyway and spool
/// what they receive. Secrets stay sealed (the `SecretBox` ciphertexts the database holds). It
/// is rewritten whenever the running set changes and read only when the database does not answer
/// at start; once the database answers, its records win.
public struct ConnectorSnapshot: Sendable {
    public let path: String

    public init(dataDirectory: String) {
        path = (dataDirectory as NSString).appendingPathComponent("connectors.json")
    }

    /// Writes `records` (atomically: a temporary file renamed over the old one).
    func save(_ records: [ConnectorRecord]) throws {
        let text = JSONValue.array(records.map(Self.json)).serialized
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw SpoolError("cannot write \(temporary)")
        }
        guard rename(temporary, path) == 0 else { throw SpoolError("cannot replace \(path): \(String(cString: strerror(errno)))") }
    }

    /// The records saved last; empty when there is no snapshot or it cannot be read (a record
    /// that does not parse is skipped).
    func load() -> [ConnectorRecord] {
        guard let data = FileManager.default.contents(atPath: path), let array = (try? JSONValue.parse(data))?.arrayValue else { return [] }
        return array.compactMap(Self.record)
    }

    static func json(_ record: ConnectorRecord) -> JSONValue {
        let config = record.config
        let sealed = record.sealedSecrets
        return .object([
            "connector_id": .string(record.connectorID),
            "name": .string(config.name),
            "connector_type": .string(config.connectorType.rawValue),
            "api_url": .string(config.apiURL),
            "exchange": .string(config.exchange.rawValue),
            "subscription_message": config.subscriptionMessage ?? .null,
            "http_method": .string(config.httpMethod.rawValue),
            "request_body": config.requestBody ?? .null,
            "auth_type": .string(config.authType.rawValue),
            "signing": config.signing ?? .null,
            "polling_interval": .number(config.pollingInterval),
            "field_mapping": config.fieldMapping ?? .null,
            "demo": .bool(record.demo),
            "lease": record.lease.map { .number(String($0)) } ?? .null,
            "sealed": .object([
                "api_key": .optional(sealed.apiKey), "api_secret": .optional(sealed.apiSecret), "passphrase": .optional(sealed.passphrase),
                "bearer_token": .optional(sealed.bearerToken), "headers": .optional(sealed.headers), "query_params": .optional(sealed.queryParams),
            ]),
        ])
    }

    static func record(_ value: JSONValue) -> ConnectorRecord? {
        func optional(_ key: String) -> JSONValue? { value[key].flatMap { $0.isNull ? nil : $0 } }
        guard let connectorID = value["connector_id"]?.stringValue, let name = value["name"]?.stringValue,
            let type = value["connector_type"]?.stringValue.flatMap(ConnectorType.init(rawValue:)),
            let url = value["api_url"]?.stringValue,
            let exchange = value["exchange"]?.stringValue.flatMap(Exchange.init(rawValue:)),
            let method = value["http_method"]?.stringValue.flatMap(ConnectorHTTPMethod.init(rawValue:)),
            let auth = value["auth_type"]?.stringValue.flatMap(AuthType.init(rawValue:)),
            case .number(let interval) = value["polling_interval"], let pollingInterval = Int(interval),
            (100...60_000).contains(pollingInterval)
        else { return nil }
        let sealed = value["sealed"]
        let now = Date()
        return ConnectorRecord(
            id: 0,
            connectorID: connectorID,
            config: ConnectorConfig(
                name: name,
                connectorType: type,
                apiURL: url,
                exchange: exchange,
                subscriptionMessage: optional("subscription_message"),
                httpMethod: method,
                requestBody: optional("request_body"),
                authType: auth,
                signing: optional("signing"),
                pollingInterval: pollingInterval,
                fieldMapping: optional("field_mapping")
            ),
            sealedSecrets: SealedSecrets(
                apiKey: sealed?["api_key"]?.stringValue,
                apiSecret: sealed?["api_secret"]?.stringValue,
                passphrase: sealed?["passphrase"]?.stringValue,
                bearerToken: sealed?["bearer_token"]?.stringValue,
                headers: sealed?["headers"]?.stringValue,
                queryParams: sealed?["query_params"]?.stringValue
            ),
            desiredState: .running,
            createdAt: now,
            updatedAt: now,
            status: ConnectorStatusRecord(status: .starting, lastError: nil, performanceMetrics: .object([:]), startedAt: nil, updatedAt: now),
            demo: value["demo"]?.boolValue ?? false,
            lease: value["lease"].flatMap { if case .number(let text) = $0 { Int64(text) } else { nil } }
        )
    }
}
