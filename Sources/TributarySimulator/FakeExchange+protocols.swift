import Foundation
import HummingbirdWebSocket
import NIOCore
import NIOWebSocket
import Synchronization
import Tributary

/// The OKX and Binance sides of the fake exchange.
extension FakeExchange {
    struct Dropped: Error {}
    struct IdleClosed: Error {}

    /// Shared by a connection's reader, sender and idle watcher.
    struct ClientClosed: Error {}

    final class Connection: Sendable {
        let subscribed = Mutex<[String]>([])
        let lastActivity = Mutex(ContinuousClock.now)
        /// The client's close arrived (and was answered): no data frame may follow (RFC 6455 §5.5.1).
        let closing = Atomic<Bool>(false)

        func touch() { lastActivity.withLock { $0 = .now } }
    }

    func malformed(after sequence: Int) -> Bool {
        options.malformedEvery > 0 && sequence % options.malformedEvery == 0
    }

    /// A trade record carrying a value no store keeps, by `kind` (0-5), or nil for kind 6 (the
    /// unpaired surrogate, which only a raw frame can carry): a price whose exponent is
    /// `Int64.min`, a time past year 9999, a NUL in the instrument, a quantity beyond NUMERIC, an
    /// extra number beyond NUMERIC, no price at all. Its trade id is `h<id>`, so a stored one would show.
    static func hostileRecord(kind: Int, instrument: String, id: Int) -> JSONValue? {
        var record: JSONObject = [
            "instId": .string(instrument), "tradeId": .string("h\(id)"), "px": "100.5", "sz": "1", "side": "buy", "ts": .string(String(nowMs())),
        ]
        switch kind {
        case 0: record["px"] = "1e-9223372036854775808"
        case 1: record["ts"] = "253402300800000"
        case 2: record["instId"] = .string(instrument + "\u{0}")
        case 3: record["sz"] = "1e99999"
        case 4: record["note"] = .number("1e5000")
        case 5: record["px"] = nil
        default: return nil
        }
        return .object(record)
    }

    func serveOKX(_ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter, pacedOn pacer: EventLoopExecutor?) async throws {
        state.withLock { $0.connections += 1 }
        let connection = Connection()
        let connID = String(UUID().uuidString.prefix(8)).lowercased()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard case .text(let text) = message else { continue }
                    connection.touch()
                    if text == "ping" {
                        self.state.withLock { $0.pingsAnswered += 1 }
                        try await outbound.write(.text("pong"))
                        continue
                    }
                    guard let request = try? JSONValue.parse(text), request["op"] == "subscribe", let args = request["args"]?.arrayValue else {
                        try await outbound.write(.text(#"{"event":"error","code":"60012","msg":"Invalid request","connId":"\#(connID)"}"#))
                        continue
                    }
                    // Every instrument of the request at once: trades start with the first subscription.
                    let accepted = args.compactMap { arg -> String? in
                        guard arg["channel"] == "trades", let instrument = arg["instId"]?.stringValue else { return nil }
                        return self.options.instruments.contains(instrument) ? instrument : nil
                    }
                    connection.subscribed.withLock { $0 += accepted }
                    for arg in args {
                        let instrument = arg["instId"]?.stringValue ?? ""
                        if arg["channel"] == "trades", self.options.instruments.contains(instrument) {
                            self.reconnects.withLock { state in
                                if let drop = state.lastDrop { state.gaps.append(.now - drop) }
                                state.lastDrop = nil
                            }
                            try await outbound.write(
                                .text(JSONValue.object(["event": "subscribe", "arg": arg, "connId": .string(connID)]).serialized)
                            )
                        } else {
                            try await outbound.write(
                                .text(
                                    #"{"event":"error","code":"60018","msg":"Wrong URL or channel:\#(arg["channel"]?.stringValue ?? ""),instId:\#(instrument) doesn't exist.","connId":"\#(connID)"}"#
                                )
                            )
                        }
                    }
                }
                connection.closing.store(true, ordering: .releasing)
            }
            group.addTask {
                while connection.subscribed.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(5)) }
                let instruments = connection.subscribed.withLock { $0 }
                let dropped = try await self.pace(.okx, instruments: instruments, on: pacer) { batch in
                    if connection.closing.load(ordering: .acquiring) { throw ClientClosed() }
                    var records: [JSONValue] = []
                    var separateFrames: [String] = []
                    for (instrument, trade) in batch {
                        let id = trade.id
                        records.append(
                            .object([
                                "instId": .string(instrument), "tradeId": .string(String(id)), "px": .string(trade.price),
                                "sz": .string(trade.quantity), "side": .string(trade.side.rawValue), "ts": .string(String(Self.nowMs())),
                            ])
                        )
                        guard self.options.hostileEvery > 0, id % self.options.hostileEvery == 0 else { continue }
                        let kind = (id / self.options.hostileEvery) % 7
                        if let record = Self.hostileRecord(kind: kind, instrument: instrument, id: id) {
                            records.append(record)
                            self.state.withLock { $0.hostileRecords += 1 }
                        } else {
                            separateFrames.append(
                                #"{"arg":{"channel":"trades","instId":"\#(instrument)"},"data":[{"instId":"\#(instrument)","tradeId":"h\#(id)","px":"1","sz":"1","side":"buy","ts":"1","note":"\ud800"}]}"#
                            )
                            self.state.withLock { $0.hostileFrames += 1 }
                        }
                    }
                    let frame: JSONValue = .object([
                        "arg": .object(["channel": "trades", "instId": .string(batch[0].instrument)]), "data": .array(records),
                    ])
                    try await outbound.write(.text(frame.serialized))
                    for text in separateFrames { try await outbound.write(.text(text)) }
                    if self.malformed(after: batch[batch.count - 1].trade.id) {
                        try await outbound.write(.text(#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"tradeId":"#))
                    }
                }
                if dropped {
                    self.reconnects.withLock { $0.lastDrop = .now }
                    throw Dropped()
                }
            }
            group.addTask {
                // OKX closes a connection whose client has sent nothing for 30 s, however much data flows to it.
                while true {
                    try await Task.sleep(for: self.options.idleTimeout / 10)
                    if ContinuousClock.now - connection.lastActivity.withLock({ $0 }) >= self.options.idleTimeout { throw IdleClosed() }
                }
            }
            do {
                try await group.next()
            } catch is Dropped {
                try? await outbound.close(.unexpectedServerError, reason: "simulated drop")
            } catch is IdleClosed {
                try? await outbound.close(.init(codeNumber: 4004), reason: "No data received in 30s.")
            }
            group.cancelAll()
        }
    }

    /// `btcusdt@trade` → `BTC-USDT` when that instrument is offered.
    func instrument(forStream stream: String) -> String? {
        let symbol = stream.split(separator: "@").first.map { $0.uppercased() } ?? ""
        return options.instruments.first { String($0.filter { $0 != "-" }) == symbol }
    }

    func serveBinance(
        _ inbound: WebSocketInboundStream,
        _ outbound: WebSocketOutboundWriter,
        streams: [String],
        combined: Bool = false,
        pacedOn pacer: EventLoopExecutor?
    ) async throws {
        state.withLock { $0.connections += 1 }
        let connection = Connection()
        connection.subscribed.withLock { $0 = streams.compactMap(self.instrument(forStream:)) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard case .text(let text) = message, let request = try? JSONValue.parse(text) else {
                        try await outbound.write(.text(#"{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}"#))
                        continue
                    }
                    if request["method"] == "SUBSCRIBE" {
                        let added = (request["params"]?.arrayValue ?? []).compactMap { $0.stringValue.flatMap(self.instrument(forStream:)) }
                        connection.subscribed.withLock { $0.append(contentsOf: added) }
                    }
                    try await outbound.write(.text(JSONValue.object(["result": .null, "id": request["id"] ?? .null]).serialized))
                }
            }
            group.addTask {
                while connection.subscribed.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(5)) }
                let instruments = connection.subscribed.withLock { $0 }
                let dropped = try await self.pace(.binance, instruments: instruments, on: pacer) { batch in
                    for (instrument, trade) in batch {
                        let symbol = String(instrument.filter { $0 != "-" })
                        let now = String(Self.nowMs())
                        // `m`: the buyer was the maker, so the taker sold.
                        let record: JSONValue = .object([
                            "e": "trade", "E": .number(now), "s": .string(symbol), "t": .number(trade.id), "p": .string(trade.price),
                            "q": .string(trade.quantity), "T": .number(now), "m": .bool(trade.side == .sell), "M": true,
                        ])
                        let frame: JSONValue =
                            combined ? .object(["stream": .string(symbol.lowercased() + "@trade"), "data": record]) : record
                        try await outbound.write(.text(frame.serialized))
                        if self.malformed(after: trade.id) { try await outbound.write(.text(#"{"e":"trade","s":"#)) }
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
}
