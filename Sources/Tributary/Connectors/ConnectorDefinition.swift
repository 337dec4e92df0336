/// A connector's settings that are not secret: stored in plain columns and returned by the API.
public struct ConnectorConfig: Sendable, Equatable {
    public var name: String
    public var connectorType: ConnectorType
    public var apiURL: String
    public var exchange: Exchange
    public var subscriptionMessage: JSONValue?
    public var httpMethod: ConnectorHTTPMethod
    public var requestBody: JSONValue?
    public var authType: AuthType
    public var signing: JSONValue?
    public var pollingInterval: Int
    public var fieldMapping: JSONValue?

    /// The signing scheme in force: explicit `signing`, else the exchange's own (okx, binance).
    public var signingScheme: SigningScheme? {
        if let name = signing?.stringValue ?? signing?["scheme"]?.stringValue { return SigningScheme(rawValue: name) }
        switch exchange {
        case .okx: return .okx
        case .binance: return .binance
        default: return nil
        }
    }
}

/// The secret parts of a connector: encrypted at rest, masked in responses, never logged.
/// Custom headers and query parameters count as secret: they often carry keys.
public struct ConnectorSecrets: Sendable, Equatable {
    public var apiKey: String?
    public var apiSecret: String?
    public var passphrase: String?
    public var bearerToken: String?
    public var headers: [String: String]
    public var queryParams: [String: String]

    public init(
        apiKey: String? = nil,
        apiSecret: String? = nil,
        passphrase: String? = nil,
        bearerToken: String? = nil,
        headers: [String: String] = [:],
        queryParams: [String: String] = [:]
    ) {
        self.apiKey = apiKey
        self.apiSecret = apiSecret
        self.passphrase = passphrase
        self.bearerToken = bearerToken
        self.headers = headers
        self.queryParams = queryParams
    }
}

/// A connector's full configuration with its secrets in plaintext: what the API accepts and what a
/// connector runtime needs. Never logged or returned as is (see `ConnectorView`).
@dynamicMemberLookup
public struct ConnectorDefinition: Sendable, Equatable {
    public var config: ConnectorConfig
    public var secrets: ConnectorSecrets

    public init(config: ConnectorConfig, secrets: ConnectorSecrets) {
        self.config = config
        self.secrets = secrets
    }

    public subscript<Value>(dynamicMember keyPath: KeyPath<ConnectorConfig, Value>) -> Value {
        config[keyPath: keyPath]
    }

    public subscript<Value>(dynamicMember keyPath: WritableKeyPath<ConnectorConfig, Value>) -> Value {
        get { config[keyPath: keyPath] }
        set { config[keyPath: keyPath] = newValue }
    }
}

/// One rejected field of a request body.
public struct FieldError: Sendable, Equatable {
    public var field: String
    public var problem: String

    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }
}
