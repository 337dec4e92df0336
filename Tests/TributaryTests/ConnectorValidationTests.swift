import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

@Suite struct ConnectorValidationTests {
    static let valid: JSONObject = [
        "name": "okx-btc", "connector_type": "websocket", "api_url": "wss://ws.okx.com:8443/ws/v5/public",
    ]

    func fields(_ overrides: JSONObject, removing removed: [String] = [], existing: ConnectorDefinition? = nil) -> [String] {
        var body = existing == nil ? Self.valid : [:]
        for (key, value) in overrides { body[key] = value }
        for key in removed { body[key] = nil }
        do {
            _ = try ConnectorDefinition.parse(.object(body), existing: existing)
            return []
        } catch {
            guard case .invalid(let errors) = error else { return ["unexpected \(error)"] }
            return errors.map(\.field)
        }
    }

    @Test func validBodyParsesWithDefaultsAndInferredExchange() throws {
        let definition = try ConnectorDefinition.parse(.object(Self.valid), existing: nil)
        #expect(definition.name == "okx-btc")
        #expect(definition.exchange == .okx)
        #expect(definition.httpMethod == .GET)
        #expect(definition.authType == AuthType.none)
        #expect(definition.pollingInterval == 1000)
    }

    @Test(arguments: [
        ("wss://stream.binance.com:9443/stream", Exchange.binance),
        ("wss://stream.bybit.com/v5/public/spot", .bybit),
        ("wss://ws-feed.exchange.coinbase.com", .coinbase),
        ("wss://ws.kraken.com/v2", .kraken),
        ("wss://example.org/feed", .custom),
        ("wss://notokx.com/feed", .custom),
    ])
    func exchangeIsInferredFromTheHost(_ url: String, _ exchange: Exchange) throws {
        var body = Self.valid
        body["api_url"] = .string(url)
        #expect(try ConnectorDefinition.parse(.object(body), existing: nil).exchange == exchange)
    }

    static let rules: [(JSONObject, String)] = [
        (["name": ""], "name"),
        (["name": .string(String(repeating: "n", count: 101))], "name"),
        (["name": .number(5)], "name"),
        (["connector_type": "grpc"], "connector_type"),
        (["api_url": "https://www.okx.com/api"], "api_url"),
        (["api_url": "wss://"], "api_url"),
        (["api_url": "not a url"], "api_url"),
        (["connector_type": "rest", "api_url": "wss://ws.okx.com"], "api_url"),
        (["http_method": "TRACE"], "http_method"),
        (["polling_interval": .number(99)], "polling_interval"),
        (["polling_interval": .number(60_001)], "polling_interval"),
        (["polling_interval": .number("1.5")], "polling_interval"),
        (["polling_interval": "1000"], "polling_interval"),
        (["auth_type": "oauth"], "auth_type"),
        (["auth_type": "api_key"], "api_key"),
        (["auth_type": "bearer"], "bearer_token"),
        (["auth_type": "hmac", "api_secret": "s", "passphrase": "p"], "api_key"),
        (["auth_type": "hmac", "api_key": "k", "passphrase": "p"], "api_secret"),
        (["auth_type": "hmac", "api_key": "k", "api_secret": "s"], "passphrase"),
        (["auth_type": "hmac", "api_key": "k", "api_secret": "s", "exchange": "bybit"], "signing"),
        (["signing": "rsa"], "signing"),
        (["signing": .object(["scheme": "generic"])], "signing.template"),
        (["signing": .object(["scheme": "generic", "template": "x", "encoding": "hex32"])], "signing.encoding"),
        (["signing": .object(["scheme": "okx", "salt": "x"])], "signing.salt"),
        (["exchange": "nasdaq"], "exchange"),
        (["headers": "X-Key: v"], "headers"),
        (["headers": .object(["X-Key": .number(1)])], "headers.X-Key"),
        (["headers": .object(["Bad Header": "v"])], "headers.Bad Header"),
        (["headers": .object(["X-Key": "a\r\nInjected: 1"])], "headers.X-Key"),
        (["query_params": .array([])], "query_params"),
        (["subscription_message": .number(1)], "subscription_message"),
        (["field_mapping": .object(["price": .number(1)])], "field_mapping"),
        (["api_key": .bool(true)], "api_key"),
        (["unknown_field": "x"], "unknown_field"),
    ]

    @Test(arguments: rules)
    func eachRuleNamesItsField(_ overrides: JSONObject, _ field: String) {
        #expect(fields(overrides) == [field])
    }

    @Test(arguments: ["name", "connector_type", "api_url"])
    func requiredFieldsAreNamed(_ field: String) {
        #expect(fields([:], removing: [field]).contains(field))
    }

    @Test func nonObjectBodyIsRejected() {
        #expect(throws: ConnectorError.self) { try ConnectorDefinition.parse(.array([]), existing: nil) }
    }

    @Test func hmacSigningFollowsTheExchange() throws {
        var body = Self.valid
        body["connector_type"] = "rest"
        body["api_url"] = "https://api.binance.com/api/v3/account"
        for (key, value) in ["auth_type": "hmac", "api_key": "k", "api_secret": "s"] as JSONObject { body[key] = value }
        #expect(try ConnectorDefinition.parse(.object(body), existing: nil).signingScheme == .binance)
    }

    @Test func partialUpdateKeepsEverythingElse() throws {
        var body = Self.valid
        body["auth_type"] = "api_key"
        body["api_key"] = "key-abcdefghijkl"
        body["headers"] = .object(["X-Token": "header-secret-value"])
        let existing = try ConnectorDefinition.parse(.object(body), existing: nil)
        let updated = try ConnectorDefinition.parse(
            .object(["name": "renamed", "api_key": .string(SecretMask.mask("key-abcdefghijkl"))]),
            existing: existing
        )
        #expect(updated.name == "renamed")
        #expect(updated.apiURL == existing.apiURL)
        #expect(updated.secrets.apiKey == "key-abcdefghijkl", "sending the mask back keeps the secret")
        #expect(updated.secrets.headers == ["X-Token": "header-secret-value"])
        #expect(fields(["polling_interval": .number(5)], existing: existing) == ["polling_interval"])
        let cleared = try ConnectorDefinition.parse(.object(["auth_type": "none", "api_key": .null]), existing: existing)
        #expect(cleared.secrets.apiKey == nil)
    }
}
