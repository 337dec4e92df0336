/// A connector as the API shows it: configuration with secrets masked, plus its status.
public struct ConnectorView: Sendable {
    public let record: ConnectorRecord
    /// Decrypted secrets, used only to render masks; `nil` when they could not be decrypted.
    let secrets: ConnectorSecrets?

    public var connectorID: String { record.connectorID }

    public var json: JSONValue {
        let config = record.config
        let sealed = record.sealedSecrets
        func masked(_ map: [String: String]?, sealed: String?) -> JSONValue {
            guard let map else { return sealed == nil ? .object([:]) : "****" }
            return .object(JSONObject(map.sorted { $0.key < $1.key }.map { ($0.key, .string(SecretMask.mask($0.value))) }))
        }
        let apiKey: JSONValue =
            if let key = secrets?.apiKey { .string(SecretMask.mask(key)) } else { sealed.apiKey == nil ? .null : "****" }
        return .object([
            "id": .number(String(record.id)),
            "connector_id": .string(record.connectorID),
            "name": .string(config.name),
            "connector_type": .string(config.connectorType.rawValue),
            "exchange": .string(config.exchange.rawValue),
            "api_url": .string(config.apiURL),
            "http_method": .string(config.httpMethod.rawValue),
            "headers": masked(secrets?.headers, sealed: sealed.headers),
            "query_params": masked(secrets?.queryParams, sealed: sealed.queryParams),
            "request_body": config.requestBody ?? .null,
            "subscription_message": config.subscriptionMessage ?? .null,
            "auth_type": .string(config.authType.rawValue),
            "api_key": apiKey,
            "has_api_key": .bool(sealed.apiKey != nil),
            "has_api_secret": .bool(sealed.apiSecret != nil),
            "has_passphrase": .bool(sealed.passphrase != nil),
            "has_bearer_token": .bool(sealed.bearerToken != nil),
            "signing": config.signing ?? .null,
            "polling_interval": .number(config.pollingInterval),
            "field_mapping": config.fieldMapping ?? .null,
            "desired_state": .string(record.desiredState.rawValue),
            "demo": .bool(record.demo),
            "status": .string(record.status.status.rawValue),
            "last_error": .optional(record.status.lastError),
            "performance_metrics": record.status.performanceMetrics,
            "started_at": .optional(record.status.startedAt.map(Timestamp.format)),
            "created_at": .string(Timestamp.format(record.createdAt)),
            "updated_at": .string(Timestamp.format(record.updatedAt)),
        ])
    }

    /// The `connector_status` row, as `GET /api/connectors/{id}/status` returns it.
    public var statusJSON: JSONValue {
        .object([
            "connector_id": .string(record.connectorID),
            "status": .string(record.status.status.rawValue),
            "desired_state": .string(record.desiredState.rawValue),
            "last_error": .optional(record.status.lastError),
            "performance_metrics": record.status.performanceMetrics,
            "started_at": .optional(record.status.startedAt.map(Timestamp.format)),
            "updated_at": .string(Timestamp.format(record.status.updatedAt)),
        ])
    }
}
