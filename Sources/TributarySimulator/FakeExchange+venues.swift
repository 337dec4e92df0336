import Foundation
import HummingbirdWebSocket
import NIOWebSocket
import Synchronization
import Tributary

/// The Bybit v5 (`/v5/public/spot`), Coinbase Advanced Trade (`/coinbase`) and Kraken v2 (`/v2`)
/// sides of the fake exchange: subscribe by message, then trades, with each venue's acks,
/// errors and ping replies (EXCHANGES.md §2.3–2.4, Kraken's v2 documentation). Drops with
/// `dropEvery` as the others do; the hostile and malformed faults are OKX's and Binance's only.
extension FakeExchange {
    func serveSubscribing(
        _ venue: FakeVenue,
        _ inbound: WebSocketInboundStream,
        _ outbound: WebSocketOutboundWriter,
        pacedOn pacer: EventLoopExecutor?
    ) async throws {
        state.withLock { $0.connections += 1 }
        let connection = Connection()
        let connID = UUID().uuidString.lowercased()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard case .text(let text) = message else { continue }
                    connection.touch()
                    let answer = self.answer(venue, to: try? JSONValue.parse(text), connID: connID)
                    connection.subscribed.withLock { $0 += answer.subscribed }
                    for reply in answer.replies { try await outbound.write(.text(reply.serialized)) }
                }
                connection.closing.store(true, ordering: .releasing)
            }
            group.addTask {
                while connection.subscribed.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(5)) }
                let instruments = connection.subscribed.withLock { $0 }
                var sequence = 0
                let dropped = try await self.pace(venue, instruments: instruments, on: pacer) { batch in
                    if connection.closing.load(ordering: .acquiring) { throw ClientClosed() }
                    for (instrument, trade) in batch {
                        sequence += 1
                        try await outbound.write(.text(Self.tradeFrame(venue, instrument, trade, sequence: sequence).serialized))
                    }
                }
                if dropped { throw Dropped() }
            }
            do {
                try await group.next()
            } catch is Dropped {
                try? await outbound.close(.unexpectedServerError, reason: "simulated drop")
            }
            group.cancelAll()
        }
    }

    /// The replies to one client message, and the instruments it subscribed.
    func answer(_ venue: FakeVenue, to request: JSONValue?, connID: String) -> (replies: [JSONValue], subscribed: [String]) {
        let now = Timestamp.format(Date())
        let offered = { (symbol: String) in self.options.instruments.first { venue.symbol($0) == symbol } }
        switch venue {
        case .bybit:
            let operation = request?["op"]?.stringValue ?? ""
            var reply: JSONObject = ["op": .string(operation), "conn_id": .string(connID)]
            if let requestID = request?["req_id"] { reply["req_id"] = requestID }
            switch operation {
            case "ping":
                reply["success"] = true
                reply["ret_msg"] = "pong"
                return ([.object(reply)], [])
            case "subscribe":
                let topics = (request?["args"]?.arrayValue ?? []).compactMap(\.stringValue)
                let instruments = topics.compactMap { topic in
                    topic.hasPrefix("publicTrade.") ? offered(String(topic.dropFirst("publicTrade.".count))) : nil
                }
                if let bad = topics.first(where: { !$0.hasPrefix("publicTrade.") || offered(String($0.dropFirst("publicTrade.".count))) == nil }) {
                    reply["success"] = false
                    reply["ret_msg"] = .string("Invalid topic: \(bad)")
                    return ([.object(reply)], [])
                }
                reply["success"] = true
                reply["ret_msg"] = "subscribe"
                return ([.object(reply)], instruments)
            default:
                reply["success"] = false
                reply["ret_msg"] = .string("error:handler not found,op:\(operation)")
                return ([.object(reply)], [])
            }
        case .coinbase:
            guard request?["type"] == "subscribe", let channel = request?["channel"]?.stringValue else {
                return ([["type": "error", "message": "failure to subscribe"]], [])
            }
            guard channel == "market_trades" || channel == "heartbeats" else {
                return ([["type": "error", "message": .string("channel \(channel) is not supported")]], [])
            }
            let products = (request?["product_ids"]?.arrayValue ?? []).compactMap(\.stringValue)
            let instruments = channel == "market_trades" ? products.compactMap(offered) : []
            let confirmation: JSONValue = .object([
                "channel": "subscriptions", "client_id": "", "timestamp": .string(now), "sequence_num": 0,
                "events": [["subscriptions": .object([channel: .array(products.map { .string($0) })])]],
            ])
            return ([confirmation], instruments)
        case .kraken:
            let method = request?["method"]?.stringValue ?? ""
            var base: JSONObject = ["method": .string(method), "time_in": .string(now), "time_out": .string(now)]
            if let requestID = request?["req_id"] { base["req_id"] = requestID }
            switch method {
            case "ping":
                base["method"] = "pong"
                return ([.object(base)], [])
            case "subscribe" where request?["params"]?["channel"] == "trade":
                var replies: [JSONValue] = []
                var instruments: [String] = []
                for symbol in (request?["params"]?["symbol"]?.arrayValue ?? []).compactMap(\.stringValue) {
                    var reply = base
                    if let instrument = offered(symbol) {
                        instruments.append(instrument)
                        reply["success"] = true
                        reply["result"] = .object(["channel": "trade", "symbol": .string(symbol), "snapshot": false])
                    } else {
                        reply["success"] = false
                        reply["error"] = .string("Currency pair not supported \(symbol)")
                        reply["symbol"] = .string(symbol)
                    }
                    replies.append(.object(reply))
                }
                return (replies, instruments)
            default:
                base["success"] = false
                base["error"] = "Method not found"
                return ([.object(base)], [])
            }
        case .okx, .binance:
            return ([], [])
        }
    }

    /// One trade as the venue sends it.
    static func tradeFrame(_ venue: FakeVenue, _ instrument: String, _ trade: SimulatedTrade, sequence: Int) -> JSONValue {
        let symbol = venue.symbol(instrument)
        let nowMs = nowMs()
        let time = Timestamp.format(Date())
        switch venue {
        case .bybit:
            let record: JSONValue = .object([
                "T": .number(String(nowMs)), "s": .string(symbol), "S": trade.side == .buy ? "Buy" : "Sell", "v": .string(trade.quantity),
                "p": .string(trade.price), "i": .string(String(trade.id)), "BT": false,
            ])
            return .object(["topic": .string("publicTrade." + symbol), "type": "snapshot", "ts": .number(String(nowMs)), "data": [record]])
        case .coinbase:
            let record: JSONValue = .object([
                "trade_id": .string(String(trade.id)), "product_id": .string(symbol), "price": .string(trade.price),
                "size": .string(trade.quantity), "side": trade.side == .buy ? "BUY" : "SELL", "time": .string(time),
            ])
            return .object([
                "channel": "market_trades", "client_id": "", "timestamp": .string(time), "sequence_num": .number(String(sequence)),
                "events": [["type": "update", "trades": [record]]],
            ])
        case .kraken:
            // Kraken sends prices and sizes as JSON numbers.
            let record: JSONValue = .object([
                "symbol": .string(symbol), "side": .string(trade.side.rawValue), "price": .number(trade.price), "qty": .number(trade.quantity),
                "ord_type": "market", "trade_id": .number(String(trade.id)), "timestamp": .string(time),
            ])
            return .object(["channel": "trade", "type": "update", "data": [record]])
        case .okx, .binance:
            return .null
        }
    }
}
