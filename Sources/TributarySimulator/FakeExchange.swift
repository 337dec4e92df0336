import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import ServiceLifecycle
import Synchronization
import Tributary

/// A fake exchange speaking OKX v5 (`/ws/v5/public`), Binance spot (`/ws/<stream>`, `/stream?streams=`),
/// Bybit v5 (`/v5/public/spot`), Coinbase Advanced Trade (`/coinbase`) and Kraken v2 (`/v2`) trade
/// streams on 127.0.0.1, for tests, the demo and the benchmark. Its market is `SimulatedMarket`.
///
/// Trade ids are one sequence per venue and instrument across all connections, so a client that reconnects
/// continues where it left off and a test can check for gaps and duplicates. Faults: dropping the
/// connection every K trades, malformed frames, the OKX idle close, Binance protocol pings.
public final class FakeExchange: Sendable {
    public let options: SimulatorOptions
    let logger: Logger
    let state: Mutex<(sent: Int, market: SimulatedMarket, connections: Int, pingsAnswered: Int, hostileRecords: Int, hostileFrames: Int)>

    public init(options: SimulatorOptions, logger: Logger = Logger(label: "tributary.simulator")) {
        self.options = options
        self.logger = logger
        state = Mutex((0, SimulatedMarket(seed: options.seed), 0, 0, 0, 0))
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
    /// Connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }
    let open = Atomic<Int>(0)
    /// Text `ping`s answered with `pong` (the OKX keepalive).
    public var pingsAnswered: Int { state.withLock { $0.pingsAnswered } }

    /// The server application; run it (it is a service) and read its port from `onServerRunning`.
    public func application(host: String = "127.0.0.1", port: Int, onRunning: @escaping @Sendable (Int) async -> Void) -> some ApplicationProtocol {
        let router = Router(context: FakeExchangeContext.self)
        router.ws("/ws/v5/public") { inbound, outbound, context in
            try await self.connection(context) { try await self.serveOKX(inbound, outbound, pacedOn: $0) }
        }
        router.ws("/ws/:stream") { inbound, outbound, context in
            let stream = context.requestContext.parameters.get("stream") ?? ""
            try await self.connection(context) { try await self.serveBinance(inbound, outbound, streams: [stream], pacedOn: $0) }
        }
        router.ws("/v5/public/spot") { inbound, outbound, context in
            try await self.connection(context) { try await self.serveSubscribing(.bybit, inbound, outbound, pacedOn: $0) }
        }
        router.ws("/coinbase") { inbound, outbound, context in
            try await self.connection(context) { try await self.serveSubscribing(.coinbase, inbound, outbound, pacedOn: $0) }
        }
        router.ws("/v2") { inbound, outbound, context in
            try await self.connection(context) { try await self.serveSubscribing(.kraken, inbound, outbound, pacedOn: $0) }
        }
        router.ws("/stream") { inbound, outbound, context in
            let streams = (context.request.uri.queryParameters.get("streams") ?? "").split(separator: "/").map(String.init)
            try await self.connection(context) { try await self.serveBinance(inbound, outbound, streams: streams, combined: true, pacedOn: $0) }
        }
        // What was sent, for fault runs that check the stored trades against it.
        let http = Router()
        http.get("/stats") { _, _ in
            let (sent, lastIDs, connections) = self.state.withLock { ($0.sent, $0.market.lastIDs, $0.connections) }
            let perInstrument = lastIDs.reduce(into: [String: Int]()) { $0[$1.key.instrument, default: 0] += $1.value }
            let perVenue = Dictionary(grouping: lastIDs, by: \.key.venue.rawValue).mapValues { entries in
                JSONValue.object(JSONObject(entries.sorted { $0.key.instrument < $1.key.instrument }.map { ($0.key.instrument, .number($0.value)) }))
            }
            let stats: JSONValue = .object([
                "sent": .number(sent),
                "connections": .number(connections),
                "trades_per_instrument": .object(JSONObject(perInstrument.sorted { $0.key < $1.key }.map { ($0.key, .number($0.value)) })),
                "trades_per_venue": .object(JSONObject(perVenue.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })),
                "reconnect_gaps_ms": .array(self.reconnectGaps.map { .number(String($0.inMilliseconds)) }),
            ])
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: stats.serialized)))
        }
        return Application(
            router: http,
            server: .http1WebSocketUpgrade(
                webSocketRouter: router,
                configuration: .init(ws: .init(maxFrameSize: 1 << 20, autoPing: .enabled(timePeriod: options.pingInterval)))
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

    /// Serves one connection. At a set rate its tasks run on its channel's event loop, so a
    /// trade is paced by that loop's timer and written where its socket is, with no other thread
    /// woken for it (`Task.sleep` wakes Dispatch's timer thread and a pool thread for each). As
    /// fast as possible (`rate` 0) they stay on Swift's pool, where generating the next trades
    /// does not wait on the loop's socket writes.
    func connection(
        _ context: WebSocketRouterContext<FakeExchangeContext>,
        _ serve: (_ pacer: EventLoopExecutor?) async throws -> Void
    ) async throws {
        open.add(1, ordering: .relaxed)
        defer { open.subtract(1, ordering: .relaxed) }
        guard options.rate > 0 else { return try await serve(nil) }
        let executor = EventLoopExecutor(context.requestContext.eventLoop)
        try await EventLoopExecutor.prefer(executor) { try await serve(executor) }
    }

    /// Reserves the next trade of `instrument` on `venue`, or `nil` when the total has been sent.
    func nextTrade(_ venue: FakeVenue, _ instrument: String) -> SimulatedTrade? {
        state.withLock { state in
            guard options.total == 0 || state.sent < options.total else { return nil }
            state.sent += 1
            return state.market.next(venue, instrument)
        }
    }

    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Sends trades at the configured rate by calling `send` with a batch of (instrument, trade) until
    /// the total is reached or the connection should drop. Returns whether it stopped to drop.
    /// With `bursts` the rate moves between lulls, the set rate and bursts, a few seconds each.
    /// With `coalesce` the trades due shortly after a wake-up go with it.
    func pace(
        _ venue: FakeVenue,
        instruments: [String],
        on pacer: EventLoopExecutor?,
        send: ([(instrument: String, trade: SimulatedTrade)]) async throws -> Void
    ) async throws -> Bool {
        guard !instruments.isEmpty else {
            try await Task.sleep(for: .seconds(3600))
            return false
        }
        var onConnection = 0
        var index = 0
        var due = ContinuousClock.now
        var rhythm = TradeRhythm(seed: options.seed ^ fnv1a(venue.rawValue), bursts: options.bursts)
        let pattern =
            options.rate == 0 && !options.tradesPerFramePattern.isEmpty
            ? options.tradesPerFramePattern : [options.rate == 0 ? options.tradesPerFrame : 1]
        var frames = 0
        while true {
            if options.rate > 0 {
                if due > .now + options.coalesce {
                    if let pacer {
                        await pacer.sleep(until: due)
                        try Task.checkCancellation()
                    } else {
                        try await Task.sleep(until: due, clock: .continuous)
                    }
                }
                due += rhythm.interval(at: due, rate: options.rate)
            } else if onConnection % 256 == 0 {
                await Task.yield()
            }
            var batch: [(instrument: String, trade: SimulatedTrade)] = []
            let perFrame = max(1, pattern[frames % pattern.count])
            frames += 1
            for _ in 0..<perFrame {
                let instrument = instruments[index % instruments.count]
                index += 1
                guard let trade = nextTrade(venue, instrument) else { break }
                batch.append((instrument, trade))
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

/// A fake exchange connection's request context: it keeps its channel's event loop, where the
/// connection's trades are paced (`FakeExchange.connection`).
struct FakeExchangeContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>
    let eventLoop: any EventLoop

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        eventLoop = source.channel.eventLoop
    }
}

/// When the next trade is due: evenly at the set rate, or with bursts, in spells of a few seconds
/// that are lulls (a quarter of the rate), ordinary, or bursts (three times the rate).
struct TradeRhythm {
    var random: SplitMix64
    let bursts: Bool
    var factor = 1.0
    var spellEnds: ContinuousClock.Instant?

    init(seed: UInt64, bursts: Bool) {
        random = SplitMix64(seed: seed)
        self.bursts = bursts
    }

    mutating func interval(at now: ContinuousClock.Instant, rate: Double) -> Duration {
        guard bursts else { return .seconds(1 / rate) }
        if spellEnds.map({ now >= $0 }) ?? true {
            let draw = random.unit()
            factor = draw < 0.3 ? 0.25 : draw < 0.8 ? 1 : 3
            let seconds = factor > 1 ? 1 + 2 * random.unit() : 2 + 8 * random.unit()
            spellEnds = now + .milliseconds(Int(seconds * 1000))
        }
        return .seconds(1 / (rate * factor))
    }
}
