import Foundation
import Synchronization

/// A normalized message accepted from a connector and waiting to be written. A class, as it is
/// handed from buffer to batch to store to broadcaster: one retain per hand-over instead of a
/// dozen (one per string it holds).
public final class PendingMessage: Sendable {
    public let connectorID: String
    public let sessionID: String
    /// Always set: the exchange's identity, or `<session_id>:<n>` when it gives none.
    public let sourceID: String
    public let message: MarketMessage
    public let receivedAt: Date
    /// `message.json` serialized once, on the connector's task rather than the writer's.
    public let data: String
    /// Already sent to realtime clients before it was stored (`"persisted": false`, while the
    /// database was unavailable): not sent again once it is.
    let announced = Atomic<Bool>(false)
    /// With several instances: the epoch of the connector's lease when this was received. A
    /// write from an epoch that is no longer the owner's is fenced (see `PostgresStore`). Not
    /// kept in the spool: a message read back from it has none.
    public let lease: Int64?

    public init(connectorID: String, sessionID: String, sourceID: String, message: MarketMessage, receivedAt: Date, lease: Int64? = nil) {
        self.lease = lease
        self.connectorID = connectorID
        self.sessionID = sessionID
        self.sourceID = sourceID
        self.receivedAt = receivedAt
        self.data = message.serializedJSON
        // The source record lives on in `data`; a buffered message need not hold its parsed tree too.
        var message = message
        message.raw = .null
        self.message = message
    }

    /// A message read back from the spool: `data` as it was serialized when it was received.
    init(connectorID: String, sessionID: String, sourceID: String, message: MarketMessage, receivedAt: Date, data: String, announced: Bool = false) {
        self.lease = nil
        self.announced.store(announced, ordering: .relaxed)
        self.connectorID = connectorID
        self.sessionID = sessionID
        self.sourceID = sourceID
        self.receivedAt = receivedAt
        self.data = data
        self.message = message
    }

    /// `(connector_id, source_id)`: what the unique index makes idempotent.
    public struct Identity: Hashable, Sendable {
        public var connectorID: String
        public var sourceID: String
    }

    public var identity: Identity { Identity(connectorID: connectorID, sourceID: sourceID) }
}

extension Array where Element == PendingMessage {
    /// The id each message got from `stored` (ids by identity). A message repeating one earlier in
    /// the batch gets none: one row was stored for both, and it is counted, announced and
    /// broadcast once.
    func ids(from stored: [PendingMessage.Identity: Int64]) -> [Int64?] {
        var seen = Set<PendingMessage.Identity>()
        return map { seen.insert($0.identity).inserted ? stored[$0.identity] : nil }
    }
}

/// A message as committed (its database id and metadata) or, while the database is unavailable,
/// as received (`id` nil): what the realtime API broadcasts.
public struct StoredMessage: Sendable {
    /// nil: not stored yet; the update says `"id":null,"persisted":false`.
    public var id: Int64?
    public var pending: PendingMessage

    public init(id: Int64?, pending: PendingMessage) {
        self.id = id
        self.pending = pending
    }

    /// The realtime `{"type":"data_update","data":{...}}` text of this message.
    public var update: String { String(decoding: updateUTF8, as: UTF8.self) }

    /// `update` as UTF-8, as the broadcaster frames it (without a `String` in between).
    var updateUTF8: [UInt8] {
        let message = pending.message
        var data = JSONObjectWriter(after: #"{"type":"data_update","data":"#, overrides: message.fields)
        if let id { data.number("id", String(id)) } else { data.string("id", nil) }
        data.string("connector_id", pending.connectorID)
        data.string("exchange", message.exchange.rawValue)
        data.string("instrument", message.instrument)
        data.string("symbol", message.symbol)
        data.string("message_type", message.messageType.rawValue)
        data.string("price", message.price)
        data.string("quantity", message.quantity)
        data.string("side", message.side)
        data.string("source_id", pending.sourceID)
        data.string("session_id", pending.sessionID)
        data.string("exchange_timestamp", message.exchangeTimestampMs.map { Timestamp.format(Date(timeIntervalSince1970: Double($0) / 1000)) })
        data.string("timestamp", Timestamp.format(pending.receivedAt))
        if id == nil { data.bool("persisted", false) }
        return data.finishUTF8(suffix: "}")
    }
}

/// One flush of the batch writer, recorded as a `websocket_batches` row.
public struct BatchRecord: Sendable {
    public var batchID: String
    /// The connector when all messages came from one, else `nil`.
    public var connectorID: String?
    public var metrics: JSONObject

    package init(batchID: String, connectorID: String?, metrics: JSONObject) {
        self.batchID = batchID
        self.connectorID = connectorID
        self.metrics = metrics
    }
}

/// A connector's live status, written to `connector_status` periodically.
public struct StatusUpdate: Sendable, Equatable {
    public var connectorID: String
    public var status: ConnectorState
    public var lastError: String?
    public var performanceMetrics: JSONValue
}
