import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import ServiceLifecycle
import Synchronization

/// A fake exchange speaking OKX v5 (`/ws/v5/public`) and Binance spot (`/ws/<stream>`, `/stream?streams=`)
/// trade streams on 127.0.0.1, for tests, the demo and the benchmark.
///
/// Trade ids are one sequence per instrument across all connections, so a client that reconnects
/// continues where it left off and a test can check for gaps and duplicates. Faults: dropping the
/// connection every K trades, malformed frames, the OKX idle close, Binance protocol pings.
public final class FakeExchange: Sendable {
    public let options: SimulatorOptions
    let logger: Logger
    let state = Mutex<(sent: Int, nextTradeID: [String: Int], connections: Int, pingsAnswered: Int, hostileRecords: Int, hostileFrames: Int)>(
        (0, [:], 0, 0, 0, 0)
    )

    public init(options: SimulatorOptions, logger: Logger = Logger(label: "tributary.simulator")) {
        self.options = options
        self.logger = logger
    }

    /// Trades sent so far, over all connections (a trade whose frame could not be written, as its
    /// connection was closing, does not count; its id is skipped).
    public var sentCount: Int { state.withLock { $0.sent } }
    /// When the last connection was dropped on purpose, and for each drop how long until the
    /// client had subscribed again (OKX): what a drop costs at the exchange.
    let reconnects = Mutex<(lastDrop: ContinuousClock.Instant?, gaps: [Duration])>((nil, []))

    /// Time from each simulated drop to the next subscription.
    public var reconnectGaps: [Duration] { reconnects.withLock { $0.gaps } }

    /// Hostile records sent inside trade frames, and hostile frames sent on their own (`hostileEvery`).
    public var hostileSent: (records: Int, frames: Int) { state.withLock { ($0.hostileRecords, $0.hostileFrames) } }
    /// Connections accepted so far.
    public var connectionCount: Int { state.withLock { $0.connections } }
    /// Text `ping`s answered with `pong` (the OKX keepalive).
    public var pingsAnswered: Int { state.withLock { $0.pingsAnswered } }

    /// The server application; run it (it is a service) and read its port from `onServerRunning`.
    public func application(host: String = "127.0.0.1", port: Int, onRunning: @escaping @Sendable (Int) async -> Void) -> some ApplicationProtocol {
        let router = Router(context: BasicWebSocketRequestContext.self)
        router.ws("/ws/v5/public") { inbound, outbound, _ in try await self.serveOKX(inbound, outbound) }
        router.ws("/ws/:stream") { inbound, outbound, context in
            let stream = context.requestContext.parameters.get("stream") ?? ""
            try await self.serveBinance(inbound, outbound, streams: [stream])
        }
        router.ws("/stream") { inbound, outbound, context in
            let streams = (context.request.uri.queryParameters.get("streams") ?? "").split(separator: "/").map(String.init)
            try await self.serveBinance(inbound, outbound, streams: streams, combined: true)
        }
        // What was sent, for fault runs that check the stored trades against it.
        let http = Router()
        http.get("/stats") { _, _ in
            let (sent, next, connections) = self.state.withLock { ($0.sent, $0.nextTradeID, $0.connections) }
            let stats: JSONValue = .object([
                "sent": .number(sent),
                "connections": .number(connections),
                "trades_per_instrument": .object(JSONObject(next.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.number($0.value - 1)) })),
                "reconnect_gaps_ms": .array(self.reconnectGaps.map { .number(String($0.inMilliseconds)) }),
            ])
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: stats.serialized)))
        }
        return Application(
            router: http,
            server: .http1WebSocketUpgrade(
                webSocketRouter: router,
                configuration: .init(maxFrameSize: 1 << 20, autoPing: .enabled(timePeriod: options.pingInterval))
            ),
            configuration: .init(address: .hostname(host, port: port), serverName: "tributary-simulator"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger
        )
    }

    /// Runs the fake exchange on an ephemeral port for the duration of `body`.
    public func withRunning<Value: Sendable>(_ body: @Sendable (_ port: Int) async throws -> Value) async throws -> Value {
        let (portStream, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let app = application(port: 0) { port in portContinuation.yield(port) }
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var ports = portStream.makeAsyncIterator()
            guard let port = await ports.next() else { throw CancellationError() }
            do {
                let value = try await body(port)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return value
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
        }
    }

    /// Reserves the next trade, or `nil` when the total has been sent.
    func nextTrade(_ instrument: String) -> (id: Int, sequence: Int)? {
        state.withLock { state in
            guard options.total == 0 || state.sent < options.total else { return nil }
            state.sent += 1
            let id = state.nextTradeID[instrument, default: 1]
            state.nextTradeID[instrument] = id + 1
            return (id, state.sent)
        }
    }

    static func price(_ id: Int) -> String {
        let cents = id % 100
        return "\(40_000 + id % 1000).\(cents < 10 ? "0" : "")\(cents)012345"
    }

    static func quantity(_ id: Int) -> String { "0.\(String(repeating: "0", count: 3))\(id % 9 + 1)" }

    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Sends trades at the configured rate by calling `send` with a batch of (instrument, trade) until
    /// the total is reached or the connection should drop. Returns whether it stopped to drop.
    func pace(instruments: [String], send: ([(String, Int)]) async throws -> Void) async throws -> Bool {
        guard !instruments.isEmpty else {
            try await Task.sleep(for: .seconds(3600))
            return false
        }
        var onConnection = 0
        var index = 0
        let started = ContinuousClock.now
        let perFrame = options.rate == 0 ? max(1, options.tradesPerFrame) : 1
        while true {
            if options.rate > 0 {
                let due = started + .seconds(Double(onConnection) / options.rate)
                if due > .now { try await Task.sleep(until: due, clock: .continuous) }
            } else if onConnection % 256 == 0 {
                await Task.yield()
            }
            var batch: [(String, Int)] = []
            for _ in 0..<perFrame {
                let instrument = instruments[index % instruments.count]
                index += 1
                guard let trade = nextTrade(instrument) else { break }
                batch.append((instrument, trade.id))
            }
            if batch.isEmpty {
                try await Task.sleep(for: .seconds(3600))
                return false
            }
            do {
                try await send(batch)
            } catch {
                // Never on the wire (the connection was closing): not sent. Its ids stay unused.
                state.withLock { $0.sent -= batch.count }
                throw error
            }
            onConnection += batch.count
            if options.dropEvery > 0, onConnection >= options.dropEvery { return true }
        }
    }
}
