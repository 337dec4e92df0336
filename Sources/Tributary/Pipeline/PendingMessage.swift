import Foundation

/// A normalized message accepted from a connector and waiting to be written.
public struct PendingMessage: Sendable {
    public var connectorID: String
    public var sessionID: String
    /// Always set: the exchange's identity, or `<session_id>:<n>` when it gives none.
    public var sourceID: String
    public var message: MarketMessage
    public var receivedAt: Date
    /// `message.json` serialized once, on the connector's task rather than the writer's.
    public var data: String

    public init(connectorID: String, sessionID: String, sourceID: String, message: MarketMessage, receivedAt: Date) {
        self.connectorID = connectorID
        self.sessionID = sessionID
        self.sourceID = sourceID
        self.receivedAt = receivedAt
        self.data = message.json.serialized
        // The source record lives on in `data`; a buffered message need not hold its parsed tree too.
        self.message = message
        self.message.raw = .null
    }

    /// True when `text` is a plain decimal number PostgreSQL's NUMERIC accepts (`-12.5`, `1e-7`).
    public static func isDecimal(_ text: String) -> Bool {
        var bytes = text.utf8[...]
        if bytes.first == UInt8(ascii: "-") || bytes.first == UInt8(ascii: "+") { bytes = bytes.dropFirst() }
        let digits = bytes.prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        bytes = bytes.dropFirst(digits.count)
        var fraction = 0
        if bytes.first == UInt8(ascii: ".") {
            bytes = bytes.dropFirst()
            fraction = bytes.prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }.count
            bytes = bytes.dropFirst(fraction)
        }
        guard digits.count + fraction > 0 else { return false }
        if bytes.first == UInt8(ascii: "e") || bytes.first == UInt8(ascii: "E") {
            bytes = bytes.dropFirst()
            if bytes.first == UInt8(ascii: "-") || bytes.first == UInt8(ascii: "+") { bytes = bytes.dropFirst() }
            let exponent = bytes.prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }.count
            guard exponent > 0 else { return false }
            bytes = bytes.dropFirst(exponent)
        }
        return bytes.isEmpty
    }
}

/// A message as committed: its database id and metadata, what the realtime API broadcasts.
public struct StoredMessage: Sendable {
    public var id: Int64
    public var pending: PendingMessage

    public init(id: Int64, pending: PendingMessage) {
        self.id = id
        self.pending = pending
    }

    /// The `data` of a realtime `data_update`.
    public var json: JSONValue {
        let message = pending.message
        var object: JSONObject = [
            "id": .number(String(id)),
            "connector_id": .string(pending.connectorID),
            "exchange": .string(message.exchange.rawValue),
            "instrument": .optional(message.instrument),
            "symbol": .optional(message.symbol),
            "message_type": .string(message.messageType.rawValue),
            "price": .optional(message.price),
            "quantity": .optional(message.quantity),
            "side": .optional(message.side),
            "source_id": .string(pending.sourceID),
            "session_id": .string(pending.sessionID),
            "exchange_timestamp": .optional(message.exchangeTimestampMs.map { Timestamp.format(Date(timeIntervalSince1970: Double($0) / 1000)) }),
            "timestamp": .string(Timestamp.format(pending.receivedAt)),
        ]
        for (key, value) in message.fields { object[key] = value }
        return .object(object)
    }
}

/// One flush of the batch writer, recorded as a `websocket_batches` row.
public struct BatchRecord: Sendable {
    public var batchID: String
    /// The connector when all messages came from one, else `nil`.
    public var connectorID: String?
    public var metrics: JSONObject
}

/// A connector's live status, written to `connector_status` periodically.
public struct StatusUpdate: Sendable, Equatable {
    public var connectorID: String
    public var status: ConnectorState
    public var lastError: String?
    public var performanceMetrics: JSONValue
}
