import Foundation
import Hummingbird

/// Reading stored data back: messages, an instrument's price history and candles, a REST
/// connector's poll results, and flushed batches. Newest first with an opaque keyset `cursor`
/// (stable while new rows arrive, no OFFSET scans); every bad parameter is a 400 naming it.
public struct QueryController<Context: RequestContext>: Sendable {
    let store: any MessageQueries & CandleStore
    let service: ConnectorService

    public init(store: any MessageQueries & CandleStore, service: ConnectorService) {
        self.store = store
        self.service = service
    }

    public func addRoutes(to table: RouteTable<Context>, in group: RouterGroup<Context>) {
        table.add(.get, "/api/messages", in: group, use: messages)
        table.add(.get, "/api/instruments/{instrument}/history", in: group, use: history)
        table.add(.get, "/api/connectors/{connector_id}/data", in: group, use: connectorData)
        table.add(.get, "/api/batches", in: group, use: batches)
        table.add(.get, "/api/dead-letters", in: group, use: deadLetters)
    }

    @Sendable func messages(_ request: Request, context: Context) async throws -> Response {
        var query = MessageQuery()
        let parameters = request.uri.queryParameters
        query.exchange = try request.exchangeParameter()
        query.instrument = parameters.get("instrument").map(Instruments.normalize)
        query.connectorID = parameters.get("connector_id")
        if let type = parameters.get("message_type") {
            guard MessageType(rawValue: type) != nil else {
                throw APIError.invalidParameter("message_type", "must be one of \(MessageType.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            query.messageType = type
        }
        (query.since, query.until) = try request.timeRange()
        query.after = try request.cursor()
        let limit = try request.integerParameter("limit", default: 100, range: 1...1000)
        query.limit = limit + 1
        let rows = try await store.messages(query)
        return Self.page(rows.prefix(limit).map(\.json), more: rows.count > limit, last: rows.prefix(limit).last?.cursor, noun: "messages")
    }

    @Sendable func history(_ request: Request, context: Context) async throws -> Response {
        let instrument = Instruments.normalize(try context.parameters.require("instrument"))
        let range = try request.timeRange()
        let until = range.until ?? Date()
        let since = range.since ?? until.addingTimeInterval(-86_400)
        let exchange = try request.exchangeParameter()
        let connectorID = request.uri.queryParameters.get("connector_id")
        if let name = request.uri.queryParameters.get("interval") {
            if connectorID != nil {
                throw APIError.invalidParameter(
                    "connector_id",
                    "candles are kept per exchange, not per connector: filter them with exchange, or leave out interval for this connector's price points"
                )
            }
            guard let interval = CandleInterval(rawValue: name) else {
                throw APIError.invalidParameter("interval", "must be one of \(CandleInterval.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let buckets = until.timeIntervalSince(since) / Double(interval.seconds)
            guard buckets <= 10_000 else {
                throw APIError.invalidParameter("interval", "\(name) over this range is more than 10000 candles; narrow since/until")
            }
            let candles = try await store.candles(instrument: instrument, exchange: exchange, since: since, until: until, interval: interval)
            return JSONResponse.success(
                "\(candles.count) \(name) candles of \(instrument)",
                data: .array(candles.map(\.json)),
                extra: [
                    "instrument": .string(instrument), "interval": .string(name), "since": .string(Timestamp.format(since)),
                    "until": .string(Timestamp.format(until)),
                ]
            )
        }
        let limit = try request.integerParameter("limit", default: 1000, range: 1...10_000)
        let rows = try await store.priceHistory(
            instrument: instrument,
            exchange: exchange,
            connectorID: connectorID,
            since: since,
            until: until,
            limit: limit
        )
        let points: [JSONValue] = rows.map { row in
            .object([
                "time": .string(Timestamp.format(row.timestamp)), "price": .optional(row.price), "quantity": .optional(row.quantity),
                "side": .optional(row.side), "message_type": .string(row.messageType), "exchange": .string(row.exchange),
                "exchange_timestamp": .optional(row.exchangeTimestamp.map(Timestamp.format)), "id": .number(String(row.id)),
            ])
        }
        return JSONResponse.success(
            "\(points.count) price points of \(instrument)",
            data: .array(points),
            extra: ["instrument": .string(instrument), "since": .string(Timestamp.format(since)), "until": .string(Timestamp.format(until))]
        )
    }

    @Sendable func connectorData(_ request: Request, context: Context) async throws -> Response {
        let id = try context.parameters.require("connector_id")
        _ = try await service.get(id)
        let after = try request.cursor()
        let limit = try request.integerParameter("limit", default: 100, range: 1...1000)
        let rows = try await store.apiData(connectorID: id, after: after, limit: limit + 1)
        return Self.page(rows.prefix(limit).map(\.json), more: rows.count > limit, last: rows.prefix(limit).last?.cursor, noun: "poll results")
    }

    @Sendable func batches(_ request: Request, context: Context) async throws -> Response {
        let after = try request.cursor()
        let limit = try request.integerParameter("limit", default: 100, range: 1...1000)
        let rows = try await store.batches(after: after, limit: limit + 1)
        return Self.page(rows.prefix(limit).map(\.json), more: rows.count > limit, last: rows.prefix(limit).last?.cursor, noun: "batches")
    }

    @Sendable func deadLetters(_ request: Request, context: Context) async throws -> Response {
        let connectorID = request.uri.queryParameters.get("connector_id")
        let after = try request.cursor()
        let limit = try request.integerParameter("limit", default: 100, range: 1...1000)
        let rows = try await store.deadLetters(connectorID: connectorID, after: after, limit: limit + 1)
        return Self.page(rows.prefix(limit).map(\.json), more: rows.count > limit, last: rows.prefix(limit).last?.cursor, noun: "dead letters")
    }

    static func page(_ items: [JSONValue], more: Bool, last: PageCursor?, noun: String) -> Response {
        JSONResponse.success(
            "\(items.count) \(noun)",
            data: .array(items),
            extra: ["next_cursor": more ? .optional(last?.encoded) : .null]
        )
    }
}

extension Request {
    /// `exchange`, one of the exchanges Tributary knows.
    func exchangeParameter() throws -> String? {
        guard let text = uri.queryParameters.get("exchange") else { return nil }
        guard Exchange(rawValue: text) != nil else {
            throw APIError.invalidParameter("exchange", "must be one of \(Exchange.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return text
    }

    /// `since` and `until` as ISO-8601 UTC or epoch milliseconds; `since` must come before `until`.
    func timeRange() throws -> (since: Date?, until: Date?) {
        func time(_ name: String) throws -> Date? {
            guard let text = uri.queryParameters.get(name) else { return nil }
            guard let date = Timestamp.parseParameter(text) else {
                throw APIError.invalidParameter(
                    name,
                    "must be an ISO-8601 UTC time (2026-01-01T00:00:00Z) or epoch milliseconds, within years 0001-9999"
                )
            }
            return date
        }
        let since = try time("since")
        let until = try time("until")
        if let since, let until, since >= until {
            throw APIError.invalidParameter("since", "must be before until")
        }
        return (since, until)
    }

    /// The opaque `cursor` of a previous page's `next_cursor`.
    func cursor() throws -> PageCursor? {
        guard let text = uri.queryParameters.get("cursor") else { return nil }
        guard let cursor = PageCursor(encoded: text) else {
            throw APIError.invalidParameter("cursor", "is not a cursor this API returned; pass next_cursor from the previous page")
        }
        return cursor
    }
}
