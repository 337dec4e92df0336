/// The kind of a market-data message (`websocket_messages.message_type`).
public enum MessageType: String, Sendable, CaseIterable {
    case trade
    case ticker
    case book
    case candle
    case other
}

/// One normalized market-data record, ready to store: exact decimal strings, the instrument as
/// `BASE-QUOTE`, the exchange's own symbol kept, and the source record under `raw`.
public struct MarketMessage: Sendable, Equatable {
    public var exchange: Exchange
    public var channel: String
    public var messageType: MessageType
    /// `BASE-QUOTE`, upper case (`BTC-USDT`).
    public var instrument: String?
    /// The exchange's own symbol (`BTCUSDT`, `BTC/USD`).
    public var symbol: String?
    public var price: String?
    public var quantity: String?
    /// The taker side, `buy` or `sell`.
    public var side: String?
    /// Identity at the source, stable across reconnects (`okx:trades:BTC-USDT:130639474`); `nil`
    /// when the exchange gives none, and the connector then numbers it within its session.
    public var sourceID: String?
    /// Exchange event time in milliseconds since 1970.
    public var exchangeTimestampMs: Int64?
    /// Extra normalized fields by message type (best bid/ask, candle OHLCV, book levels).
    public var fields: JSONObject
    /// The record as the exchange sent it.
    public var raw: JSONValue

    public init(
        exchange: Exchange,
        channel: String,
        messageType: MessageType,
        instrument: String? = nil,
        symbol: String? = nil,
        price: String? = nil,
        quantity: String? = nil,
        side: String? = nil,
        sourceID: String? = nil,
        exchangeTimestampMs: Int64? = nil,
        fields: JSONObject = [:],
        raw: JSONValue
    ) {
        self.exchange = exchange
        self.channel = channel
        self.messageType = messageType
        self.instrument = instrument
        self.symbol = symbol
        self.price = price
        self.quantity = quantity
        self.side = side
        self.sourceID = sourceID
        self.exchangeTimestampMs = exchangeTimestampMs
        self.fields = fields
        self.raw = raw
    }

    /// The normalized message as stored in `websocket_messages.data` (so `data->>'instrument'` works).
    public var json: JSONValue {
        var object = JSONObject()
        writeMembers(to: &object)
        for (key, value) in fields { object[key] = value }
        object["raw"] = raw
        return .object(object)
    }

    /// `json` as text with its keys in `jsonb` order (see `JSONValue.keyPrecedes`), every object
    /// inside it too: the `data` of every stored message, as PostgreSQL would return it.
    public var serializedJSON: String {
        var extra = fields
        extra["raw"] = raw
        var writer = JSONKeyOrderWriter(overrides: extra)
        writeMembers(to: &writer)
        return writer.finish()
    }

    /// The members of `json` that come before `fields` and `raw`.
    func writeMembers(to sink: inout some JSONMemberSink) {
        sink.string("exchange", exchange.rawValue)
        sink.string("channel", channel)
        sink.string("message_type", messageType.rawValue)
        sink.string("instrument", instrument)
        sink.string("symbol", symbol)
        sink.string("price", price)
        sink.string("quantity", quantity)
        sink.string("side", side)
        if let exchangeTimestampMs { sink.number("exchange_timestamp_ms", String(exchangeTimestampMs)) }
    }
}

extension MarketMessage {
    /// The normalized record without `raw`, with its `source_id`: what poll rows and `/test` show.
    public var record: JSONValue {
        var object = json.objectValue ?? [:]
        object["raw"] = nil
        object["source_id"] = .optional(sourceID)
        return .object(object)
    }
}

/// What one inbound frame turned out to be.
public enum NormalizedFrame: Sendable, Equatable {
    /// Market data: one frame may carry several records (OKX `data` arrays, batched trades).
    case messages([MarketMessage])
    /// Market data of which some records could not be read: the good ones go on, each bad one is
    /// counted and recorded on its own (one malformed record never costs its neighbours).
    case partial([MarketMessage], malformed: [MalformedRecord])
    /// Subscription acks, pongs, heartbeats, notices: not data, not stored.
    case control(String)
    /// The exchange reported an error (shown as the connector's `last_error`).
    case exchangeError(String)
}

extension NormalizedFrame {
    /// The market data of `.messages` and `.partial`, nil for anything else.
    public var marketMessages: [MarketMessage]? {
        switch self {
        case .messages(let messages), .partial(let messages, _): messages
        case .control, .exchangeError: nil
        }
    }
}

/// A record of a data frame that could not be normalized, with why.
public struct MalformedRecord: Sendable, Equatable {
    public var reason: String
    public var raw: JSONValue

    public init(reason: String, raw: JSONValue) {
        self.reason = reason
        self.raw = raw
    }
}

/// Collects the records of one frame: each that normalizes is kept, each that throws becomes a
/// `MalformedRecord`, and the frame is `.messages` or, with any malformed, `.partial`; a frame
/// whose every record is malformed fails as a whole, as a frame that cannot be read.
struct RecordCollector {
    var messages: [MarketMessage] = []
    var malformed: [MalformedRecord] = []

    init(capacity: Int = 0) { messages.reserveCapacity(capacity) }

    mutating func add(_ record: JSONValue, _ make: () throws(NormalizationError) -> MarketMessage) {
        do {
            messages.append(try make())
        } catch {
            malformed.append(MalformedRecord(reason: error.reason, raw: record))
        }
    }

    /// Adds what a whole normalizer makes of `record` (for field mappings applied per record).
    mutating func add(_ record: JSONValue, frame make: () throws(NormalizationError) -> NormalizedFrame) {
        do {
            let frame = try make()
            messages += frame.marketMessages ?? []
            if case .partial(_, let more) = frame { malformed += more }
        } catch {
            malformed.append(MalformedRecord(reason: error.reason, raw: record))
        }
    }

    func frame() throws(NormalizationError) -> NormalizedFrame {
        if messages.isEmpty, let first = malformed.first { throw NormalizationError(first.reason) }
        return malformed.isEmpty ? .messages(messages) : .partial(messages, malformed: malformed)
    }
}

/// Why a frame could not be normalized; counted, logged and skipped by the connector.
public struct NormalizationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String

    public init(_ reason: String) { self.reason = reason }

    public var description: String { reason }
}
