import Foundation

/// Filters of `GET /api/messages` and the page position, newest first.
public struct MessageQuery: Sendable, Equatable {
    public var exchange: String?
    /// Normalized (`BTC-USDT`); an exchange symbol is normalized before it gets here.
    public var instrument: String?
    public var connectorID: String?
    public var messageType: String?
    /// Inclusive lower bound of `timestamp`.
    public var since: Date?
    /// Exclusive upper bound of `timestamp`.
    public var until: Date?
    /// Only rows strictly after this position in newest-first order (the keyset cursor).
    public var after: PageCursor?
    public var limit = 100

    public init() {}
}

/// A position in a newest-first listing: the last row's timestamp and id. Opaque to clients
/// (base64url); stable while new rows arrive, because new rows sort before it.
public struct PageCursor: Sendable, Equatable {
    public var timestamp: Date
    public var id: Int64

    public init(timestamp: Date, id: Int64) {
        self.timestamp = timestamp
        self.id = id
    }

    public var encoded: String {
        Data("\(Timestamp.format(timestamp))|\(id)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    public init?(encoded: String) {
        var base64 = encoded.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8) else { return nil }
        let parts = text.split(separator: "|")
        guard parts.count == 2, let timestamp = Timestamp.parse(String(parts[0])), let id = Int64(parts[1]) else { return nil }
        self.init(timestamp: timestamp, id: id)
    }
}

/// A `websocket_messages` row as the query API returns it.
public struct MessageRecord: Sendable, Equatable {
    public var id: Int64
    public var connectorID: String
    public var exchange: String
    public var instrument: String?
    public var messageType: String
    public var price: String?
    public var quantity: String?
    public var side: String?
    public var sourceID: String?
    public var sessionID: String?
    public var exchangeTimestamp: Date?
    public var timestamp: Date
    public var data: JSONValue

    public var json: JSONValue {
        .object([
            "id": .number(String(id)), "connector_id": .string(connectorID), "exchange": .string(exchange), "instrument": .optional(instrument),
            "symbol": data["symbol"] ?? .null, "message_type": .string(messageType), "price": .optional(price), "quantity": .optional(quantity),
            "side": .optional(side), "source_id": .optional(sourceID), "session_id": .optional(sessionID),
            "exchange_timestamp": .optional(exchangeTimestamp.map(Timestamp.format)), "timestamp": .string(Timestamp.format(timestamp)),
            "data": data,
        ])
    }

    public var cursor: PageCursor { PageCursor(timestamp: timestamp, id: id) }
}

/// Candle widths of `GET /api/instruments/{instrument}/history?interval=`.
public enum CandleInterval: String, Sendable, CaseIterable {
    case oneMinute = "1m"
    case fiveMinutes = "5m"
    case fifteenMinutes = "15m"
    case oneHour = "1h"
    case oneDay = "1d"

    public var seconds: Int {
        switch self {
        case .oneMinute: 60
        case .fiveMinutes: 300
        case .fifteenMinutes: 900
        case .oneHour: 3600
        case .oneDay: 86_400
        }
    }
}

/// One OHLCV candle of stored trades, exact decimals.
public struct Candle: Sendable, Equatable {
    public var time: Date
    public var open: String
    public var high: String
    public var low: String
    public var close: String
    public var volume: String
    public var tradeCount: Int

    public var json: JSONValue {
        .object([
            "time": .string(Timestamp.format(time)), "open": .string(open), "high": .string(high), "low": .string(low),
            "close": .string(close), "volume": .string(volume), "trade_count": .number(tradeCount),
        ])
    }
}

/// An `api_connector_data` row as the API returns it.
public struct APIDataRecord: Sendable, Equatable {
    public var id: Int64
    public var connectorID: String
    public var data: JSONValue
    public var rawResponse: JSONValue
    public var statusCode: Int?
    public var responseTimeMs: Double?
    public var sourceID: String?
    public var sessionID: String?
    public var timestamp: Date

    public var json: JSONValue {
        .object([
            "id": .number(String(id)), "connector_id": .string(connectorID), "data": data, "raw_response": rawResponse,
            "status_code": statusCode.map { .number($0) } ?? .null,
            "response_time_ms": responseTimeMs.map { .number(String(format: "%.1f", $0)) } ?? .null, "source_id": .optional(sourceID),
            "session_id": .optional(sessionID), "timestamp": .string(Timestamp.format(timestamp)),
        ])
    }

    public var cursor: PageCursor { PageCursor(timestamp: timestamp, id: id) }
}

/// A `websocket_batches` row.
public struct BatchRow: Sendable, Equatable {
    public var id: Int64
    public var batchID: String
    public var connectorID: String?
    public var messageCount: Int
    public var messages: JSONValue
    public var metrics: JSONValue
    public var timestamp: Date

    public var json: JSONValue {
        .object([
            "id": .number(String(id)), "batch_id": .string(batchID), "connector_id": .optional(connectorID),
            "message_count": .number(messageCount), "messages": messages, "metrics": metrics, "timestamp": .string(Timestamp.format(timestamp)),
        ])
    }

    public var cursor: PageCursor { PageCursor(timestamp: timestamp, id: id) }
}

/// A `dead_letters` row.
public struct DeadLetterRecord: Sendable, Equatable {
    public var id: Int64
    public var letter: DeadLetter

    public var json: JSONValue {
        .object([
            "id": .number(String(id)), "connector_id": .string(letter.connectorID), "source_id": .optional(letter.sourceID),
            "session_id": .optional(letter.sessionID), "stage": .string(letter.stage.rawValue), "reason": .string(letter.reason),
            "error": .string(letter.error), "raw": .string(letter.raw), "timestamp": .string(Timestamp.format(letter.timestamp)),
        ])
    }

    public var cursor: PageCursor { PageCursor(timestamp: letter.timestamp, id: id) }
}
