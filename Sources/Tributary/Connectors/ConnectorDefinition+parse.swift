import Foundation

extension ConnectorDefinition {
    /// The body fields `POST /api/connectors` and `PUT /api/connectors/{id}` accept.
    public static let bodyFields: Set<String> = [
        "name", "connector_type", "api_url", "exchange", "subscription_message", "http_method", "headers", "query_params",
        "request_body", "auth_type", "api_key", "api_secret", "passphrase", "bearer_token", "signing", "polling_interval",
        "field_mapping",
    ]

    /// `signing` object fields: the HMAC scheme and its options, or for `api_key` auth where the key goes.
    static let signingFields: Set<String> = [
        "scheme", "template", "header", "timestamp_header", "timestamp_format", "key_header", "encoding", "algorithm", "query_param",
        "recv_window",
    ]

    /// Validates a create (`existing == nil`) or partial update body and returns the resulting definition,
    /// or throws `ConnectorError.invalid` with every problem found, each naming its field.
    ///
    /// - Parameter maskedSecret: renders a stored secret the way responses show it; a PUT that sends the
    ///   masked form back unchanged keeps the stored secret.
    public static func parse(
        _ body: JSONValue,
        existing: ConnectorDefinition?,
        maskedSecret: (String) -> String = SecretMask.mask
    ) throws(ConnectorError) -> ConnectorDefinition {
        guard case .object(let object) = body else {
            throw .invalid([FieldError(field: "body", problem: "must be a JSON object, got \(body.typeName)")])
        }
        var reader = FieldReader(object: object)
        for key in object.keys where !bodyFields.contains(key) {
            reader.fail(key, "unknown field")
        }
        // What no store keeps (a NUL character, a number beyond NUMERIC) is refused here, naming
        // its field, rather than by the database.
        for (key, value) in object where bodyFields.contains(key) {
            if let problem = value.storageProblem { reader.fail(key, "cannot be stored: \(problem.detail)") }
        }

        let name = reader.string("name").map { $0.trimmingCharacters(in: .whitespaces) }
        let connectorType = reader.enumValue("connector_type", ConnectorType.self)
        let apiURL = reader.string("api_url")
        let exchangeField = reader.optionalEnum("exchange", Exchange.self)
        let subscription = reader.optionalValue("subscription_message")
        let method = reader.enumValue("http_method", ConnectorHTTPMethod.self, uppercased: true)
        let headers = reader.stringMap("headers", headerNames: true)
        let queryParams = reader.stringMap("query_params", headerNames: false)
        let requestBody = reader.optionalValue("request_body")
        let authType = reader.enumValue("auth_type", AuthType.self)
        let apiKey = reader.optionalString("api_key")
        let apiSecret = reader.optionalString("api_secret")
        let passphrase = reader.optionalString("passphrase")
        let bearerToken = reader.optionalString("bearer_token")
        let signing = reader.optionalValue("signing")
        let pollingInterval = reader.integer("polling_interval")
        let fieldMapping = reader.optionalValue("field_mapping")

        if existing == nil {
            for required in ["name", "connector_type", "api_url"] where object[required] == nil || object[required] == .null {
                reader.fail(required, "is required")
            }
        }

        let base = existing
        var definition = ConnectorDefinition(
            config: ConnectorConfig(
                name: name ?? base?.name ?? "",
                connectorType: connectorType ?? base?.connectorType ?? .rest,
                apiURL: apiURL ?? base?.apiURL ?? "",
                exchange: base?.exchange ?? .custom,
                subscriptionMessage: subscription.isPresent ? subscription.value : base?.subscriptionMessage,
                httpMethod: method ?? base?.httpMethod ?? .GET,
                requestBody: requestBody.isPresent ? requestBody.value : base?.requestBody,
                authType: authType ?? base?.authType ?? AuthType.none,
                signing: signing.isPresent ? signing.value : base?.signing,
                pollingInterval: pollingInterval ?? base?.pollingInterval ?? 1000,
                fieldMapping: fieldMapping.isPresent ? fieldMapping.value : base?.fieldMapping
            ),
            secrets: base?.secrets ?? ConnectorSecrets()
        )
        if exchangeField.isPresent, let exchange = exchangeField.value {
            definition.exchange = exchange
        } else if exchangeField.isPresent || existing == nil || apiURL != nil {
            definition.exchange = Exchange.infer(fromHost: URL(string: definition.apiURL)?.host())
        }
        // A secret sent back in its masked form (as a client that GETs and PUTs would) keeps the stored value.
        func secret(_ field: Present<String?>, _ current: String?) -> String? {
            guard field.isPresent else { return current }
            if let value = field.value, let current, value == maskedSecret(current) { return current }
            return field.value
        }
        func secretMap(_ sent: [String: String]?, _ current: [String: String]?) -> [String: String] {
            guard let sent else { return current ?? [:] }
            return sent.mapValues { value in current?.values.first { maskedSecret($0) == value } ?? value }
        }
        definition.secrets.apiKey = secret(apiKey, base?.secrets.apiKey)
        definition.secrets.apiSecret = secret(apiSecret, base?.secrets.apiSecret)
        definition.secrets.passphrase = secret(passphrase, base?.secrets.passphrase)
        definition.secrets.bearerToken = secret(bearerToken, base?.secrets.bearerToken)
        definition.secrets.headers = secretMap(headers, base?.secrets.headers)
        definition.secrets.queryParams = secretMap(queryParams, base?.secrets.queryParams)

        // Stored secrets never follow a connector to another origin: moving it means sending them again
        // (the secret itself, not its mask).
        if let base, apiURL != nil, Self.origin(of: definition.apiURL) != Self.origin(of: base.apiURL) {
            let secrets: [(String, Present<String?>, String?)] = [
                ("api_key", apiKey, base.secrets.apiKey), ("api_secret", apiSecret, base.secrets.apiSecret),
                ("passphrase", passphrase, base.secrets.passphrase), ("bearer_token", bearerToken, base.secrets.bearerToken),
            ]
            var unsent = secrets.filter { _, sent, stored in stored != nil && (!sent.isPresent || sent.value == stored.map(maskedSecret)) }.map(\.0)
            if headers == nil, !base.secrets.headers.isEmpty { unsent.append("headers") }
            if queryParams == nil, !base.secrets.queryParams.isEmpty { unsent.append("query_params") }
            for field in unsent {
                reader.fail(field, "must be sent again (or null to drop it) when api_url moves to another host: stored secrets never follow a URL")
            }
        }

        definition.check(into: &reader)
        guard reader.errors.isEmpty else { throw .invalid(reader.errors) }
        return definition
    }

    /// `scheme://host:port`, lower case, with the scheme's default port made explicit; nil for no URL.
    static func origin(of url: String) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(), let host = components.host?.lowercased()
        else { return nil }
        let port = components.port ?? (["https", "wss"].contains(scheme) ? 443 : 80)
        // ws and http share an origin for this purpose: the same host gets the same secrets.
        let family = ["https", "wss"].contains(scheme) ? "tls" : "plain"
        return "\(family)://\(host):\(port)"
    }

    /// Query parameter names that carry credentials (compared lower case, letters and digits only).
    static let credentialNames: Set<String> = [
        "key", "apikey", "secret", "apisecret", "signature", "sig", "token", "accesstoken", "password", "passwd", "passphrase", "auth",
        "authorization",
    ]

    /// Why `url` carries credentials in the clear (userinfo, or a query parameter named like a key,
    /// signature or token), or nil. Secrets belong in the encrypted fields.
    static func embeddedCredentials(in url: String) -> String? {
        guard let components = URLComponents(string: url) else { return nil }
        if components.user != nil || components.password != nil {
            return "must not contain a user name or password; use auth_type with api_key, bearer_token or headers, which are stored encrypted"
        }
        for item in components.queryItems ?? [] {
            let name = String(item.name.lowercased().unicodeScalars.filter { CharacterSet.alphanumerics.contains($0) })
            if Self.credentialNames.contains(name) || ["key", "secret", "signature", "token", "password"].contains(where: name.hasSuffix) {
                return "must not carry the credential \"\(item.name)\" in its query; put it in query_params (stored encrypted) or the secret fields"
            }
        }
        return nil
    }

    /// Cross-field rules, applied to the merged definition.
    func check(into reader: inout FieldReader) {
        if !reader.hasError("name"), config.name.isEmpty || config.name.count > 100 {
            reader.fail("name", "must be 1 to 100 characters")
        }
        if !reader.hasError("api_url") && !reader.hasError("connector_type") {
            let schemes = config.connectorType == .rest ? ["http", "https"] : ["ws", "wss"]
            let url = URL(string: config.apiURL)
            let scheme = url?.scheme?.lowercased()
            if config.apiURL.contains(where: \.isWhitespace) || url == nil || scheme == nil || url?.host()?.isEmpty != false
                || !schemes.contains(scheme ?? "")
            {
                reader.fail(
                    "api_url",
                    "must be an absolute \(schemes.joined(separator: " or ")) URL for a \(config.connectorType.rawValue) connector"
                )
            }
        }
        if !reader.hasError("api_url"), let problem = Self.embeddedCredentials(in: config.apiURL) {
            reader.fail("api_url", problem)
        }
        if !reader.hasError("polling_interval"), !(100...60_000).contains(config.pollingInterval) {
            reader.fail("polling_interval", "must be between 100 and 60000 milliseconds")
        }
        if let subscriptionMessage = config.subscriptionMessage, !reader.hasError("subscription_message") {
            switch subscriptionMessage {
            case .null, .object, .string: break
            case .array(let messages) where messages.allSatisfy({ $0.objectValue != nil || $0.stringValue != nil }): break
            default: reader.fail("subscription_message", "must be an object, a string, or a list of them")
            }
        }
        if let fieldMapping = config.fieldMapping, fieldMapping != .null, !reader.hasError("field_mapping") {
            if let mapping = fieldMapping.objectValue, mapping.allSatisfy({ $0.value.stringValue != nil }) {
            } else {
                reader.fail("field_mapping", "must be an object mapping field names to JSON paths such as \"$.data[0].px\"")
            }
        }
        checkSigning(into: &reader)
        guard !reader.hasError("auth_type") else { return }
        func require(_ value: String?, _ field: String) {
            if value?.isEmpty != false, !reader.hasError(field) {
                reader.fail(field, "is required when auth_type is \(config.authType.rawValue)")
            }
        }
        switch config.authType {
        case .none: break
        case .apiKey: require(secrets.apiKey, "api_key")
        case .bearer: require(secrets.bearerToken, "bearer_token")
        case .hmac:
            require(secrets.apiKey, "api_key")
            require(secrets.apiSecret, "api_secret")
            if config.signingScheme == nil, !reader.hasError("signing") {
                reader.fail("signing", "is required for hmac auth unless the exchange is okx or binance")
            }
            if config.signingScheme == .okx { require(secrets.passphrase, "passphrase") }
        }
    }

    func checkSigning(into reader: inout FieldReader) {
        guard let signing = config.signing, signing != .null, !reader.hasError("signing") else { return }
        let schemes = SigningScheme.allCases.map(\.rawValue).joined(separator: ", ")
        switch signing {
        case .string(let name) where SigningScheme(rawValue: name) != nil: return
        case .object(let object):
            for key in object.keys where !Self.signingFields.contains(key) {
                reader.fail("signing.\(key)", "unknown field")
            }
            for (key, value) in object where value.stringValue == nil {
                reader.fail("signing.\(key)", "must be a string")
            }
            if let format = object["timestamp_format"]?.stringValue, !["ms", "s", "iso"].contains(format) {
                reader.fail("signing.timestamp_format", "must be ms, s or iso")
            }
            if let window = object["recv_window"]?.stringValue, Int(window).map({ (1...60_000).contains($0) }) != true {
                reader.fail("signing.recv_window", "must be a number of milliseconds from 1 to 60000, as a string")
            }
            if config.authType == .apiKey, object["scheme"] == nil {
                // {"header": "X-MY-KEY"} or {"query_param": "apikey"}: where the key goes.
                if object["header"] != nil, object["query_param"] != nil {
                    reader.fail("signing.query_param", "give either header or query_param for api_key auth")
                }
                return
            }
            guard let scheme = object["scheme"]?.stringValue, SigningScheme(rawValue: scheme) != nil else {
                reader.fail("signing.scheme", "must be one of \(schemes)")
                return
            }
            if let encoding = object["encoding"]?.stringValue, !["hex", "base64"].contains(encoding) {
                reader.fail("signing.encoding", "must be hex or base64")
            }
            if let algorithm = object["algorithm"]?.stringValue, !["sha256", "sha512"].contains(algorithm) {
                reader.fail("signing.algorithm", "must be sha256 or sha512")
            }
            if scheme == SigningScheme.generic.rawValue, object["template"]?.stringValue?.isEmpty != false {
                reader.fail("signing.template", "is required for generic signing")
            }
        default:
            reader.fail("signing", "must be one of \(schemes), or an object with a \"scheme\"")
        }
    }
}

/// A field that may be absent, or present with a value (possibly null).
struct Present<Value> {
    var isPresent: Bool
    var value: Value
}

/// Reads typed fields from a JSON object, collecting one error per bad field.
struct FieldReader {
    let object: JSONObject
    private(set) var errors: [FieldError] = []

    mutating func fail(_ field: String, _ problem: String) {
        errors.append(FieldError(field: field, problem: problem))
    }

    func hasError(_ field: String) -> Bool { errors.contains { $0.field == field } }

    mutating func typeError(_ field: String, _ expected: String, _ value: JSONValue) {
        fail(field, "must be \(expected), got \(value.typeName)")
    }

    mutating func string(_ field: String) -> String? {
        guard let value = object[field], value != .null else { return nil }
        guard let string = value.stringValue else {
            typeError(field, "a string", value)
            return nil
        }
        return string
    }

    mutating func optionalString(_ field: String) -> Present<String?> {
        guard let value = object[field] else { return Present(isPresent: false, value: nil) }
        if value == .null { return Present(isPresent: true, value: nil) }
        guard let string = value.stringValue else {
            typeError(field, "a string or null", value)
            return Present(isPresent: false, value: nil)
        }
        return Present(isPresent: true, value: string)
    }

    mutating func optionalValue(_ field: String) -> Present<JSONValue?> {
        guard let value = object[field] else { return Present(isPresent: false, value: nil) }
        return Present(isPresent: true, value: value == .null ? nil : value)
    }

    mutating func enumValue<E: RawRepresentable & CaseIterable>(_ field: String, _ type: E.Type, uppercased: Bool = false) -> E?
    where E.RawValue == String {
        guard let raw = string(field) else { return nil }
        guard let value = E(rawValue: uppercased ? raw.uppercased() : raw) else {
            fail(field, "must be one of \(E.allCases.map(\.rawValue).joined(separator: ", "))")
            return nil
        }
        return value
    }

    mutating func optionalEnum<E: RawRepresentable & CaseIterable>(_ field: String, _ type: E.Type) -> Present<E?>
    where E.RawValue == String {
        guard let value = object[field] else { return Present(isPresent: false, value: nil) }
        if value == .null { return Present(isPresent: true, value: nil) }
        guard let parsed = enumValue(field, type) else { return Present(isPresent: false, value: nil) }
        return Present(isPresent: true, value: parsed)
    }

    mutating func integer(_ field: String) -> Int? {
        guard let value = object[field], value != .null else { return nil }
        guard case .number(let text) = value, let integer = Int(text) else {
            if case .number = value { fail(field, "must be an integer") } else { typeError(field, "an integer", value) }
            return nil
        }
        return integer
    }

    mutating func stringMap(_ field: String, headerNames: Bool) -> [String: String]? {
        guard let value = object[field] else { return nil }
        if value == .null { return [:] }
        guard let members = value.objectValue else {
            typeError(field, "an object of strings", value)
            return nil
        }
        var result: [String: String] = [:]
        for (key, member) in members {
            guard let string = member.stringValue else {
                typeError("\(field).\(key)", "a string", member)
                continue
            }
            if headerNames, key.isEmpty || !key.utf8.allSatisfy(Self.isTokenByte) {
                fail("\(field).\(key)", "is not a valid header name")
            } else if string.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) {
                fail("\(field).\(key)", "must not contain line breaks")
            } else {
                result[key] = string
            }
        }
        return result
    }

    /// RFC 9110 token characters, the only ones allowed in a header name.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default: "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }
}
