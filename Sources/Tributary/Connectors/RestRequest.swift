import Foundation

/// Builds one poll request of a REST connector from its definition and authenticates it, freshly
/// for every request (timestamps and signatures are never reused). Pure: the clock is a parameter.
struct RestRequest: Sendable {
    /// `scheme://host[:port]`.
    var origin: String
    var signable: SignableRequest

    var url: String { origin + signable.pathWithQuery }

    struct InvalidURL: Error, CustomStringConvertible {
        var description: String { "api_url is not an absolute http(s) URL" }
    }

    static func make(_ definition: ConnectorDefinition, now: Date) throws -> RestRequest {
        guard let components = URLComponents(string: definition.apiURL), let scheme = components.scheme, let host = components.host else {
            throw InvalidURL()
        }
        let origin = "\(scheme)://\(host.contains(":") ? "[\(host)]" : host)" + (components.port.map { ":\($0)" } ?? "")
        let path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        var request = SignableRequest(method: definition.httpMethod.rawValue, path: path, query: components.percentEncodedQuery ?? "")
        for (name, value) in definition.secrets.queryParams.sorted(by: { $0.key < $1.key }) {
            request.appendQuery(name, value)
        }
        if definition.httpMethod != .GET, let body = definition.requestBody, body != .null {
            request.body = body.stringValue ?? body.serialized
            request.headers.append(("Content-Type", "application/json"))
        }
        request.headers.append(("Accept", "application/json"))
        for (name, value) in definition.secrets.headers.sorted(by: { $0.key < $1.key }) {
            request.headers.append((name, value))
        }
        try authenticate(&request, definition, now: now)
        return RestRequest(origin: origin, signable: request)
    }

    static func authenticate(_ request: inout SignableRequest, _ definition: ConnectorDefinition, now: Date) throws {
        let secrets = definition.secrets
        func option(_ key: String) -> String? { definition.signing?[key]?.stringValue }
        switch definition.authType {
        case .none:
            return
        case .apiKey:
            let key = secrets.apiKey ?? ""
            if let parameter = option("query_param") {
                request.appendQuery(parameter, key)
            } else {
                request.headers.append((option("header") ?? "X-API-Key", key))
            }
        case .bearer:
            request.headers.append(("Authorization", "Bearer \(secrets.bearerToken ?? "")"))
        case .hmac:
            let secret = secrets.apiSecret ?? ""
            switch definition.signingScheme ?? .generic {
            case .okx:
                let timestamp = RequestSigning.isoMilliseconds(now)
                let signature = RequestSigning.okxSignature(
                    secret: secret,
                    timestamp: timestamp,
                    method: request.method,
                    requestPath: request.pathWithQuery,
                    body: request.body
                )
                request.headers += [
                    ("OK-ACCESS-KEY", secrets.apiKey ?? ""), ("OK-ACCESS-SIGN", signature), ("OK-ACCESS-TIMESTAMP", timestamp),
                    ("OK-ACCESS-PASSPHRASE", secrets.passphrase ?? ""),
                ]
            case .binance:
                if let window = option("recv_window") { request.appendQuery("recvWindow", window) }
                request.appendQuery("timestamp", String(Int64(now.timeIntervalSince1970 * 1000)))
                let body = request.header("Content-Type") == "application/x-www-form-urlencoded" ? request.body : ""
                request.appendQuery("signature", RequestSigning.binanceSignature(secret: secret, query: request.query, body: body))
                request.headers.append(("X-MBX-APIKEY", secrets.apiKey ?? ""))
            case .generic:
                let timestamp: String
                switch option("timestamp_format") ?? "ms" {
                case "s": timestamp = String(Int64(now.timeIntervalSince1970))
                case "iso": timestamp = RequestSigning.isoMilliseconds(now)
                default: timestamp = String(Int64(now.timeIntervalSince1970 * 1000))
                }
                let signature = RequestSigning.genericSignature(
                    secret: secret,
                    template: option("template") ?? "{timestamp}{method}{path_with_query}{body}",
                    request: request,
                    timestamp: timestamp,
                    algorithm: RequestSigning.Algorithm(rawValue: option("algorithm") ?? "sha256") ?? .sha256,
                    encoding: RequestSigning.Encoding(rawValue: option("encoding") ?? "hex") ?? .hex
                )
                request.headers += [
                    (option("key_header") ?? "X-API-Key", secrets.apiKey ?? ""), (option("timestamp_header") ?? "X-Timestamp", timestamp),
                    (option("header") ?? "X-Signature", signature),
                ]
            }
        }
    }
}
