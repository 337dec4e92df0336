/// Where a connector gets its data: an HTTP API it polls or a WebSocket it streams from.
public enum ConnectorType: String, Sendable, CaseIterable {
    case rest
    case websocket
}

/// The exchanges Tributary normalizes natively; anything else is `custom` (mapped by `field_mapping`).
public enum Exchange: String, Sendable, CaseIterable {
    case okx
    case binance
    case bybit
    case coinbase
    case kraken
    case custom

    /// Infers the exchange from an API host name (`ws.okx.com` → okx), `custom` when unknown.
    public static func infer(fromHost host: String?) -> Exchange {
        guard let host = host?.lowercased() else { return .custom }
        let domains: [(String, Exchange)] = [
            ("okx.com", .okx), ("binance.com", .binance), ("binance.us", .binance), ("binance.vision", .binance),
            ("bybit.com", .bybit), ("coinbase.com", .coinbase), ("kraken.com", .kraken),
        ]
        for (domain, exchange) in domains where host == domain || host.hasSuffix("." + domain) {
            return exchange
        }
        return .custom
    }
}

/// How requests are authenticated against the source.
public enum AuthType: String, Sendable, CaseIterable {
    case none
    case apiKey = "api_key"
    case bearer
    case hmac
}

/// The request-signing scheme of an `hmac` connector.
public enum SigningScheme: String, Sendable, CaseIterable {
    case okx
    case binance
    case generic
}

/// HTTP methods a REST connector may use.
public enum ConnectorHTTPMethod: String, Sendable, CaseIterable {
    case GET, POST, PUT, PATCH, DELETE
}

/// What the user asked the connector to do; persisted so a restarted server resumes it.
public enum DesiredState: String, Sendable, CaseIterable {
    case running
    case stopped
}

/// What the connector is actually doing (`connector_status.status`).
public enum ConnectorState: String, Sendable, CaseIterable {
    case stopped
    case starting
    case running
    case reconnecting
    case error
}
