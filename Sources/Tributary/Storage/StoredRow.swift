import Foundation

/// Column access shared by both backends, so a row is decoded into records by one piece of code.
package protocol StoredRow: Sendable {
    func string(_ column: Int) throws -> String?
    func integer(_ column: Int) throws -> Int64?
    func date(_ column: Int) throws -> Date?
}

extension StoredRow {
    func requiredString(_ column: Int) throws -> String {
        guard let value = try string(column) else { throw StoreError.corrupt("column \(column) is null") }
        return value
    }

    func json(_ column: Int) throws -> JSONValue? {
        guard let text = try string(column) else { return nil }
        do { return try JSONValue.parse(text) } catch { throw StoreError.corrupt("column \(column): \(error)") }
    }

    func enumValue<E: RawRepresentable>(_ column: Int, _ type: E.Type) throws -> E where E.RawValue == String {
        let raw = try requiredString(column)
        guard let value = E(rawValue: raw) else { throw StoreError.corrupt("unknown \(E.self) \"\(raw)\"") }
        return value
    }
}

/// The connector columns both stores select, in the order `ConnectorRecord.init(row:)` reads them.
/// `%j` marks JSON columns, which PostgreSQL casts to text.
enum ConnectorColumns {
    static let list = [
        "c.id", "c.connector_id", "c.name", "c.connector_type", "c.exchange", "c.api_url", "c.http_method", "%j c.request_body",
        "%j c.subscription_message", "c.auth_type", "c.api_key", "c.api_secret", "c.passphrase", "c.bearer_token", "c.headers",
        "c.query_params", "%j c.signing", "c.polling_interval", "%j c.field_mapping", "c.desired_state", "c.created_at",
        "c.updated_at", "s.status", "s.last_error", "%j s.performance_metrics", "s.started_at", "s.updated_at", "CAST(c.demo AS INTEGER)",
    ]

    /// `SELECT <columns> FROM api_connectors c LEFT JOIN connector_status s ...`, with `jsonCast` applied to JSON columns.
    static func select(jsonCast: String) -> String {
        let columns = list.map { $0.hasPrefix("%j ") ? String($0.dropFirst(3)) + jsonCast : $0 }
        return "SELECT \(columns.joined(separator: ", ")) FROM api_connectors c "
            + "LEFT JOIN connector_status s ON s.connector_id = c.connector_id"
    }
}

extension ConnectorRecord {
    init(row: some StoredRow) throws {
        guard let id = try row.integer(0), let interval = try row.integer(17) else { throw StoreError.corrupt("connector id") }
        self.id = id
        self.connectorID = try row.requiredString(1)
        self.config = ConnectorConfig(
            name: try row.requiredString(2),
            connectorType: try row.enumValue(3, ConnectorType.self),
            apiURL: try row.requiredString(5),
            exchange: try row.enumValue(4, Exchange.self),
            subscriptionMessage: try row.json(8),
            httpMethod: try row.enumValue(6, ConnectorHTTPMethod.self),
            requestBody: try row.json(7),
            authType: try row.enumValue(9, AuthType.self),
            signing: try row.json(16),
            pollingInterval: Int(interval),
            fieldMapping: try row.json(18)
        )
        self.sealedSecrets = SealedSecrets(
            apiKey: try row.string(10),
            apiSecret: try row.string(11),
            passphrase: try row.string(12),
            bearerToken: try row.string(13),
            headers: try row.string(14),
            queryParams: try row.string(15)
        )
        self.desiredState = try row.enumValue(19, DesiredState.self)
        self.createdAt = try row.date(20) ?? Date(timeIntervalSince1970: 0)
        self.updatedAt = try row.date(21) ?? createdAt
        self.status = ConnectorStatusRecord(
            status: try row.string(22).flatMap(ConnectorState.init(rawValue:)) ?? .stopped,
            lastError: try row.string(23),
            performanceMetrics: try row.json(24) ?? .object([:]),
            startedAt: try row.date(25),
            updatedAt: try row.date(26) ?? updatedAt
        )
        self.demo = try row.integer(27) == 1
    }
}
