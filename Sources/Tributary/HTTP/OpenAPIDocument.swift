/// The OpenAPI 3.1 document served at `GET /openapi.json`. A test compares its operations with
/// the router's, so a route cannot be added without being described.
enum OpenAPIDocument {
    static func ref(_ name: String) -> JSONValue { .object(["$ref": .string("#/components/schemas/\(name)")]) }
    static func nullable(_ type: String) -> JSONValue { .object(["type": .array([.string(type), "null"])]) }
    static let string: JSONValue = ["type": "string"]
    static let integer: JSONValue = ["type": "integer"]
    static let anyJSON: JSONValue = .object([:])

    static func object(_ properties: JSONObject, required: [String] = []) -> JSONValue {
        .object(["type": "object", "properties": .object(properties), "required": .array(required.map { .string($0) })])
    }

    /// `{"status":"success","message":...,"data":<data>}` plus extra members.
    static func envelope(_ data: JSONValue, extra: JSONObject = [:]) -> JSONValue {
        var properties: JSONObject = ["status": ["type": "string", "const": "success"], "message": string, "data": data]
        for (key, value) in extra { properties[key] = value }
        return object(properties, required: ["status", "message", "data"])
    }

    static func list(_ item: String, extra: JSONObject = [:]) -> JSONValue {
        var extra = extra
        extra["next_cursor"] = nullable("string")
        return envelope(["type": "array", "items": ref(item)], extra: extra)
    }

    static func json(_ schema: JSONValue) -> JSONValue { .object(["application/json": .object(["schema": schema])]) }

    static func error(_ description: String) -> JSONValue {
        .object(["description": .string(description), "content": json(ref("Error"))])
    }

    static func operation(
        _ summary: String,
        parameters: [JSONValue] = [],
        body: JSONValue? = nil,
        ok: JSONValue,
        errors: [(String, String)] = [],
        secured: Bool = true
    ) -> JSONValue {
        var responses: JSONObject = ["200": .object(["description": "Success", "content": json(ok)])]
        for (code, description) in errors { responses[code] = error(description) }
        if secured { responses["401"] = error("Missing or wrong API token") }
        responses["403"] = error("Cross-origin request from an origin not in TRIBUTARY_ALLOWED_ORIGINS")
        responses["421"] = error("Without API tokens: a Host that is not this server (DNS rebinding)")
        responses["500"] = error("Unexpected error (no details)")
        responses["503"] = responses["503"] ?? error("Too many open connections")
        if body != nil {
            responses["413"] = error("Body over 1 MiB")
            responses["415"] = error("Body not sent as Content-Type: application/json")
        }
        var operation: JSONObject = ["summary": .string(summary), "parameters": .array(parameters), "responses": .object(responses)]
        if let body { operation["requestBody"] = .object(["required": true, "content": json(body)]) }
        if !secured { operation["security"] = .array([]) }
        return .object(operation)
    }

    static func query(_ name: String, _ schema: JSONValue, _ description: String) -> JSONValue {
        .object(["name": .string(name), "in": "query", "required": false, "schema": schema, "description": .string(description)])
    }

    static func path(_ name: String) -> JSONValue {
        .object(["name": .string(name), "in": "path", "required": true, "schema": string])
    }

    static let connectorID = path("connector_id")
    static let limit = query("limit", ["type": "integer", "minimum": 1, "maximum": 1000], "Page size (default 100)")
    static let cursor = query("cursor", string, "next_cursor of the previous page")
    static let exchange = query("exchange", ["type": "string", "enum": .array(Exchange.allCases.map { .string($0.rawValue) })], "One exchange")
    static let time = ["type": "string", "description": "ISO-8601 UTC or epoch milliseconds"] as JSONValue
    static let notFound = ("404", "Unknown connector")
    static let invalid = ("400", "Invalid parameter or body; errors[] names the field")
    static let unavailable = ("503", "Database unavailable")

    /// The query parameters the document lists for an operation: the only ones it accepts.
    static func queryParameterNames(_ method: String, _ path: String, in document: JSONValue = document) -> Set<String> {
        let parameters = document["paths"]?[path]?[method.lowercased()]?["parameters"]?.arrayValue ?? []
        return Set(parameters.filter { $0["in"] == "query" }.compactMap { $0["name"]?.stringValue })
    }

    static var document: JSONValue {
        let connectorOps: [(String, JSONValue)] = ["start", "stop", "restart"].map { action in
            (
                "/api/connectors/{connector_id}/\(action)",
                .object([
                    "post": operation(
                        "\(action.prefix(1).uppercased() + action.dropFirst()) a connector (idempotent)",
                        parameters: [connectorID],
                        ok: envelope(ref("Connector")),
                        errors: [notFound, unavailable]
                    )
                ])
            )
        }
        var paths: JSONObject = [
            "/health": ["get": operation("Liveness", ok: object(["status": string, "timestamp": string]), secured: false)],
            "/ready": [
                "get": operation(
                    "Readiness: database reachable and migrated",
                    ok: object(["status": string, "timestamp": string]),
                    errors: [unavailable],
                    secured: false
                )
            ],
            "/metrics": [
                "get": .object([
                    "summary": "Prometheus metrics (text exposition format)", "security": .array([]),
                    "responses": ["200": ["description": "Metrics", "content": ["text/plain": ["schema": ["type": "string"]]]]],
                ])
            ],
            "/openapi.json": ["get": operation("This document", ok: ["type": "object"], secured: false)],
            "/api/connectors": .object([
                "get": operation(
                    "List connectors with their status",
                    parameters: [limit, query("offset", ["type": "integer", "minimum": 0], "Rows to skip")],
                    ok: envelope(["type": "array", "items": ref("Connector")], extra: ["total": integer, "limit": integer, "offset": integer]),
                    errors: [invalid, unavailable]
                ),
                "post": operation(
                    "Create a connector",
                    body: ref("ConnectorInput"),
                    ok: envelope(ref("Connector"), extra: ["connector_id": string]),
                    errors: [invalid, ("409", "Duplicate name, or MAX_CONNECTORS reached"), unavailable]
                ),
            ]),
            "/api/connectors/{connector_id}": .object([
                "get": operation("One connector", parameters: [connectorID], ok: envelope(ref("Connector")), errors: [notFound, unavailable]),
                "put": operation(
                    "Update a connector (partial bodies allowed; a running one restarts)",
                    parameters: [connectorID],
                    body: ref("ConnectorInput"),
                    ok: envelope(ref("Connector")),
                    errors: [invalid, notFound, ("409", "Duplicate name"), unavailable]
                ),
                "delete": operation(
                    "Stop and delete a connector with its status and poll data",
                    parameters: [connectorID],
                    ok: envelope(object(["connector_id": string])),
                    errors: [notFound, unavailable]
                ),
            ]),
            "/api/connectors/{connector_id}/status": [
                "get": operation("Its connector_status row", parameters: [connectorID], ok: envelope(ref("Status")), errors: [notFound, unavailable])
            ],
            "/api/connectors/{connector_id}/test": [
                "post": operation(
                    "One request (or WebSocket connect + first message) without storing anything",
                    parameters: [connectorID],
                    ok: envelope(ref("TestResult")),
                    errors: [notFound, ("429", "Tested moments ago (at most once per 2 s per connector)"), unavailable]
                )
            ],
            "/api/connectors/{connector_id}/data": [
                "get": operation(
                    "Poll results of a REST connector, newest first",
                    parameters: [connectorID, limit, cursor],
                    ok: list("PollResult"),
                    errors: [invalid, notFound, unavailable]
                )
            ],
            "/api/messages": [
                "get": operation(
                    "Stored messages, newest first, keyset-paginated",
                    parameters: [
                        exchange, query("instrument", string, "BTC-USDT or the exchange symbol"),
                        query("connector_id", string, "One connector"),
                        query("message_type", ["type": "string", "enum": ["trade", "ticker", "book", "candle", "other"]], "Kind of message"),
                        query("since", time, "Inclusive lower bound"), query("until", time, "Exclusive upper bound"), limit, cursor,
                    ],
                    ok: list("Message"),
                    errors: [invalid, unavailable]
                )
            ],
            "/api/instruments/{instrument}/history": [
                "get": operation(
                    "Price points of an instrument (oldest first), or OHLCV candles with interval",
                    parameters: [
                        path("instrument"), query("since", time, "Default: 24 h before until"), query("until", time, "Default: now"),
                        exchange,
                        query("connector_id", string, "One connector's price points (not with interval: candles are kept per exchange)"),
                        query("limit", ["type": "integer", "minimum": 1, "maximum": 10000], "Points (default 1000)"),
                        query("interval", ["type": "string", "enum": ["1m", "5m", "15m", "1h", "1d"]], "Return candles of this width"),
                    ],
                    ok: envelope(
                        ["type": "array", "items": ["oneOf": [ref("PricePoint"), ref("Candle")]]],
                        extra: ["instrument": string, "since": string, "until": string, "interval": string]
                    ),
                    errors: [invalid, unavailable]
                )
            ],
            "/api/batches": [
                "get": operation("Flushed batches, newest first", parameters: [limit, cursor], ok: list("Batch"), errors: [invalid, unavailable])
            ],
            "/api/instances": [
                "get": operation(
                    "The Tributary instances sharing this database (with SQLite: this one), each with the connectors it runs",
                    ok: envelope(["type": "array", "items": ref("Instance")]),
                    errors: [unavailable]
                )
            ],
            "/api/dead-letters": [
                "get": operation(
                    "Records received but never stored (refused at normalization or by the database), newest first",
                    parameters: [query("connector_id", string, "One connector"), limit, cursor],
                    ok: list("DeadLetter"),
                    errors: [invalid, unavailable]
                )
            ],
            "/api/realtime": [
                "get": .object([
                    "summary": "WebSocket upgrade: live data_update messages (see the README); plain GET answers 426",
                    "parameters": .array([
                        query("connector_id", string, "Filter"), query("exchange", string, "Filter"), query("instrument", string, "Filter"),
                        query("token", string, "API token (alternative to the Authorization header)"),
                    ]),
                    "responses": [
                        "101": ["description": "Switching protocols"], "426": error("Not a WebSocket upgrade request"),
                        "401": error("Missing or wrong API token"),
                        "400": ["description": "Upgrade refused (wrong token, foreign origin or Host): the WebSocket stack answers a bare 400"],
                        "403": error("Cross-origin request from an origin not in TRIBUTARY_ALLOWED_ORIGINS"),
                        "421": error("Without API tokens: a Host that is not this server"),
                    ],
                ])
            ],
        ]
        for (route, item) in connectorOps { paths[route] = item }
        // operationIds, and links from a created connector to everything that takes its id, so
        // clients and fuzzers can follow a connector's lifecycle.
        var links: JSONObject = [:]
        for (route, item) in paths {
            guard var operations = item.objectValue else { continue }
            for (method, operation) in operations {
                guard var fields = operation.objectValue else { continue }
                let id = Self.operationID(method, route)
                fields["operationId"] = .string(id)
                operations[method] = .object(fields)
                if route.contains("{connector_id}") {
                    links[id] = ["operationId": .string(id), "parameters": ["connector_id": "$response.body#/connector_id"]]
                }
            }
            paths[route] = .object(operations)
        }
        if var created = paths["/api/connectors"]?["post"]?.objectValue, var responses = created["responses"]?.objectValue,
            var ok = responses["200"]?.objectValue, var collection = paths["/api/connectors"]?.objectValue
        {
            ok["links"] = .object(links)
            responses["200"] = .object(ok)
            created["responses"] = .object(responses)
            collection["post"] = .object(created)
            paths["/api/connectors"] = .object(collection)
        }
        let timestamp = string
        let schemas: JSONObject = [
            "Error": object(
                [
                    "detail": string, "error_code": string, "timestamp": timestamp,
                    "errors": ["type": "array", "items": object(["field": string, "problem": string], required: ["field", "problem"])],
                ],
                required: ["detail", "error_code", "timestamp"]
            ),
            "ConnectorInput": .object([
                "type": "object", "additionalProperties": false,
                "properties": .object([
                    "name": ["type": "string", "minLength": 1, "maxLength": 100],
                    "connector_type": ["type": "string", "enum": ["rest", "websocket"]], "api_url": string,
                    "exchange": ["type": "string", "enum": ["okx", "binance", "bybit", "coinbase", "kraken", "custom"]],
                    "subscription_message": anyJSON, "http_method": ["type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]],
                    "headers": ["type": ["object", "null"], "additionalProperties": ["type": "string"]],
                    "query_params": ["type": ["object", "null"], "additionalProperties": ["type": "string"]], "request_body": anyJSON,
                    "auth_type": ["type": "string", "enum": ["none", "api_key", "bearer", "hmac"]], "api_key": nullable("string"),
                    "api_secret": nullable("string"), "passphrase": nullable("string"), "bearer_token": nullable("string"), "signing": anyJSON,
                    "polling_interval": ["type": "integer", "minimum": 100, "maximum": 60000], "field_mapping": anyJSON,
                ]),
                "required": ["name", "connector_type", "api_url"],
                "examples": [
                    [
                        "name": "okx-btc-trades", "connector_type": "websocket", "api_url": "ws://127.0.0.1:9/ws/v5/public",
                        "subscription_message": ["op": "subscribe", "args": [["channel": "trades", "instId": "BTC-USDT"]]],
                    ],
                    [
                        "name": "okx-btc-ticker", "connector_type": "rest", "api_url": "http://127.0.0.1:9/api/v5/market/ticker?instId=BTC-USDT",
                        "polling_interval": 1000,
                    ],
                ],
            ]),
            "Connector": object(
                [
                    "id": integer, "connector_id": string, "name": string, "connector_type": string, "exchange": string, "api_url": string,
                    "http_method": string, "headers": anyJSON, "query_params": anyJSON, "request_body": anyJSON, "subscription_message": anyJSON,
                    "auth_type": string, "api_key": nullable("string"), "has_api_key": ["type": "boolean"],
                    "has_api_secret": ["type": "boolean"], "has_passphrase": ["type": "boolean"], "has_bearer_token": ["type": "boolean"],
                    "signing": anyJSON, "polling_interval": integer, "field_mapping": anyJSON, "desired_state": string, "status": string,
                    "last_error": nullable("string"), "performance_metrics": anyJSON, "started_at": nullable("string"), "created_at": timestamp,
                    "updated_at": timestamp, "demo": ["type": "boolean", "description": "Created by serve --demo; a plain serve never starts it"],
                ],
                required: ["connector_id", "name", "connector_type", "api_url", "status"]
            ),
            "Status": object(
                [
                    "connector_id": string, "status": string, "desired_state": string, "last_error": nullable("string"),
                    "performance_metrics": anyJSON, "started_at": nullable("string"), "updated_at": string,
                ],
                required: ["connector_id", "status"]
            ),
            "TestResult": object(
                [
                    "ok": ["type": "boolean"], "connector_type": string, "status_code": nullable("integer"), "response_time_ms": ["type": "number"],
                    "record_count": integer, "records": ["type": "array"], "error": string, "extraction_error": string,
                ],
                required: ["ok", "connector_type"]
            ),
            "Message": object(
                [
                    "id": integer, "connector_id": string, "exchange": string, "instrument": nullable("string"), "symbol": anyJSON,
                    "message_type": string, "price": nullable("string"), "quantity": nullable("string"), "side": nullable("string"),
                    "source_id": nullable("string"), "session_id": nullable("string"), "exchange_timestamp": nullable("string"),
                    "timestamp": timestamp, "data": anyJSON,
                ],
                required: ["id", "connector_id", "exchange", "message_type", "timestamp"]
            ),
            "PricePoint": object(
                [
                    "time": timestamp, "price": nullable("string"), "quantity": nullable("string"), "side": nullable("string"),
                    "message_type": string, "exchange": string, "exchange_timestamp": nullable("string"), "id": integer,
                ],
                required: ["time", "price"]
            ),
            "Candle": object(
                [
                    "time": timestamp, "open": string, "high": string, "low": string, "close": string, "volume": string,
                    "trade_count": integer,
                ],
                required: ["time", "open", "high", "low", "close", "volume", "trade_count"]
            ),
            "PollResult": object(
                [
                    "id": integer, "connector_id": string, "data": anyJSON, "raw_response": anyJSON, "status_code": nullable("integer"),
                    "response_time_ms": nullable("number"), "source_id": nullable("string"), "session_id": nullable("string"),
                    "timestamp": timestamp,
                ],
                required: ["id", "connector_id", "timestamp"]
            ),
            "Instance": object(
                [
                    "instance_id": string, "address": string, "version": string, "started_at": timestamp, "heartbeat_at": timestamp,
                    "status": ["type": "string", "enum": ["alive", "lost", "stopped"]], "connectors": ["type": "array", "items": string],
                    "self": ["type": "boolean", "description": "The instance that answered"],
                    "messages_per_second": [
                        "type": "number", "description": "The sum of its connectors' recent message rates (what balancing by rate evens out)",
                    ],
                ],
                required: ["instance_id", "address", "version", "status", "connectors", "self", "messages_per_second"]
            ),
            "DeadLetter": object(
                [
                    "id": integer, "connector_id": string, "source_id": nullable("string"), "session_id": nullable("string"),
                    "stage": ["type": "string", "enum": ["normalize", "store"]], "reason": string, "error": string,
                    "raw": ["type": "string", "description": "The record as received (JSON text, at most 64 KiB)"], "timestamp": timestamp,
                ],
                required: ["id", "connector_id", "stage", "reason", "error", "raw", "timestamp"]
            ),
            "Batch": object(
                [
                    "id": integer, "batch_id": string, "connector_id": nullable("string"), "message_count": integer,
                    "messages": ["type": "array", "items": integer], "metrics": anyJSON, "timestamp": timestamp,
                ],
                required: ["id", "batch_id", "message_count", "timestamp"]
            ),
        ]
        return .object([
            "openapi": "3.1.0",
            "info": [
                "title": "Tributary", "version": .string(tributaryVersion),
                "description": "Market data connectors, storage and live re-broadcast. JSON everywhere; errors carry detail, error_code, timestamp.",
            ],
            "security": [["bearer": []]],
            "paths": .object(paths),
            "components": .object([
                "schemas": .object(schemas),
                "securitySchemes": ["bearer": ["type": "http", "scheme": "bearer", "description": "One of TRIBUTARY_API_TOKENS"]],
            ]),
        ])
    }

    /// `get /api/connectors/{connector_id}/data` → `getApiConnectorsConnectorIdData`.
    static func operationID(_ method: String, _ path: String) -> String {
        let words = path.split(whereSeparator: { !$0.isLetter && !$0.isNumber })
        return method.lowercased() + words.map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
    }

    /// Every documented `(METHOD, path)`, for comparing with the router.
    static var operations: Set<String> {
        var operations: Set<String> = []
        for (path, item) in document["paths"]?.objectValue ?? [:] {
            for method in item.objectValue?.keys ?? [] { operations.insert("\(method.uppercased()) \(path)") }
        }
        return operations
    }
}
