import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import ServiceLifecycle
import Synchronization

/// Streams from an exchange WebSocket: connects (ws or wss), subscribes, keeps the connection
/// alive the way the exchange wants, detects dead connections, and reconnects with backoff,
/// resubscribing each time under a new `session_id`. Frames go to the pipeline without waiting.
struct WebSocketConnector: Sendable {
    let context: ConnectorContext

    /// How the connection is kept alive: exchanges with a text or JSON ping, or protocol pings.
    enum Keepalive: Equatable {
        case text(String)
        case protocolPings
    }

    static func keepalive(for exchange: Exchange) -> Keepalive {
        switch exchange {
        case .okx: .text("ping")
        case .bybit: .text(#"{"op":"ping"}"#)
        case .kraken: .text(#"{"method":"ping"}"#)
        case .binance, .coinbase, .custom: .protocolPings
        }
    }

    /// The frames to send after connecting: each element of a list is sent on its own.
    static func subscriptionFrames(_ message: JSONValue?) -> [String] {
        switch message {
        case nil, .null?: []
        case .string(let text)?: [text]
        case .array(let items)?: items.map { $0.stringValue ?? $0.serialized }
        case let other?: [other.serialized]
        }
    }

    /// The tasks of one connection.
    enum ConnectionTask: Sendable {
        case reader
        case keepalive
        case closer
    }

    struct DeadConnection: Error, CustomStringConvertible {
        let silence: Duration
        var description: String { "no data and no pong for \(silence)" }
    }

    struct ClosedByExchange: Error, CustomStringConvertible {
        let detail: String
        var description: String { "connection closed by the exchange\(detail)" }
    }

    /// Runs until cancelled (stop) or until reconnecting has failed too many times in a row.
    func run() async {
        let settings = context.settings
        let state = context.state
        let logger = context.logger
        var attempt = 0
        var lastImmediate: ContinuousClock.Instant?
        let disconnectedAt = Mutex<ContinuousClock.Instant?>(nil)
        while !Task.isCancelled {
            let sessionID = "ws_" + UUID().uuidString.lowercased().prefix(16)
            state.setSession(String(sessionID))
            let connectedAt = Mutex<ContinuousClock.Instant?>(nil)
            let receivedBefore = state.counters.received.load(ordering: .relaxed)
            var sessionLogger = logger
            sessionLogger[metadataKey: "session_id"] = "\(sessionID)"
            let failure: String
            do {
                let close = try await connect(sessionID: String(sessionID), logger: sessionLogger) {
                    connectedAt.withLock { $0 = .now }
                    if let lostAt = disconnectedAt.withLock({ lost in
                        defer { lost = nil }
                        return lost
                    }) {
                        state.counters.disconnectedMillis.add(Int((ContinuousClock.now - lostAt).inMilliseconds), ordering: .relaxed)
                    }
                }
                failure = ClosedByExchange(detail: close.map { " (code \($0.closeCode), \($0.reason ?? ""))" } ?? "").description
            } catch is CancellationError {
                break
            } catch {
                failure = "\(error)"
            }
            // On stop or shutdown the connection was closed on purpose; that is no reason to reconnect.
            if Task.isCancelled || Task.isShuttingDownGracefully || state.stopRequested { break }
            // Time away is counted from the end of a connection that was up (not from failed attempts' ends).
            if connectedAt.withLock({ $0 }) != nil { disconnectedAt.withLock { $0 = .now } }
            // A connection that subscribed and delivered data was healthy: the next one follows at
            // once (at most once per `immediateReconnectInterval`). Backoff is for attempts that fail.
            let delivered = state.counters.received.load(ordering: .relaxed) > receivedBefore
            let stable = connectedAt.withLock({ $0 }).map { ContinuousClock.now - $0 >= settings.stableAfter } ?? false
            if delivered || stable { attempt = 0 }
            let immediate = delivered && (lastImmediate.map { ContinuousClock.now - $0 >= settings.immediateReconnectInterval } ?? true)
            attempt += 1
            if attempt > settings.maxReconnectAttempts {
                state.set(.error, error: "gave up after \(settings.maxReconnectAttempts) reconnect attempts; last: \(failure)")
                logger.error("connector gave up reconnecting", metadata: ["error_type": "reconnect_exhausted", "error": "\(failure)"])
                return
            }
            state.set(.reconnecting, error: failure)
            state.counters.reconnects.add(1, ordering: .relaxed)
            let delay = immediate ? .zero : settings.backoff.delay(attempt: attempt)
            if immediate { lastImmediate = .now }
            sessionLogger.warning(
                "connection lost; reconnecting",
                metadata: ["error_type": "disconnect", "error": "\(failure)", "attempt": "\(attempt)", "delay": "\(delay)"]
            )
            do { try await Task.sleep(for: delay) } catch { break }
        }
        state.set(.stopped)
    }

    /// One connection: subscribe, then read until it ends; returns the close frame the exchange sent.
    func connect(sessionID: String, logger: Logger, onConnected: @escaping @Sendable () -> Void) async throws -> WebSocketCloseFrame? {
        let definition = context.definition
        let settings = context.settings
        let keepalive = Self.keepalive(for: definition.exchange)
        let configuration = WebSocketClientConfiguration(
            maxFrameSize: 1 << 24,
            additionalHeaders: Self.headers(definition.secrets.headers),
            closeTimeout: .seconds(2),
            autoPing: keepalive == .protocolPings ? .enabled(timePeriod: settings.protocolPingPeriod) : .disabled,
            validateUTF8: false
        )
        let normalizer = Normalizer(exchange: definition.exchange, fieldMapping: definition.fieldMapping)
        let subscriptions = Self.subscriptionFrames(definition.subscriptionMessage)
        let context = self.context
        let lastReceived = LastSeen()
        let frames = FrameIngest(
            context: context,
            normalizer: normalizer,
            session: IngestSession(sessionID: sessionID, countsTradeGaps: true),
            lastReceived: lastReceived
        )
        // After the connection has closed: no frame is read after this.
        defer { frames.publishTradeIDs() }
        return try await Self.open(Self.url(definition), configuration: configuration, settings: settings, frames: frames, logger: logger) {
            inbound,
            outbound,
            _ in
            onConnected()
            context.state.connected.store(true, ordering: .releasing)
            defer { context.state.connected.store(false, ordering: .releasing) }
            for frame in subscriptions { try await outbound.write(.text(frame)) }
            context.state.set(.running)
            logger.info("connected and subscribed", metadata: ["subscriptions": "\(subscriptions.count)"])
            try await withThrowingTaskGroup(of: ConnectionTask.self) { group in
                group.addTask {
                    // What the event loop hands on (see `ExchangeFrameReader`): large or fragmented
                    // messages and the ones behind them, in order.
                    var iterator = inbound.makeAsyncIterator()
                    while let message = try await iterator.nextMessage(maxSize: 1 << 24) {
                        switch message {
                        case .text(var text): text.withUTF8 { frames.ingest($0) }
                        case .binary(let buffer): frames.ingest(buffer.readableBytesView)
                        }
                        frames.handedOff.subtract(1, ordering: .releasing)
                        if !context.buffer.hasRoom {
                            await context.pauseWhileSpoolFull { lastReceived.nanos.store(Self.nowNanos(), ordering: .relaxed) }
                        }
                    }
                    return .reader
                }
                if case .text(let ping) = keepalive {
                    group.addTask {
                        let step = min(settings.keepaliveAfter, settings.deadAfter, settings.maxSendSilence) / 4
                        var pingedAt: Int64 = 0
                        var sentAt = Self.nowNanos()
                        while true {
                            try await Task.sleep(for: step)
                            let now = Self.nowNanos()
                            let last = lastReceived.nanos.load(ordering: .relaxed)
                            let idle = Duration.nanoseconds(now - last)
                            if idle >= settings.keepaliveAfter + settings.deadAfter { throw DeadConnection(silence: idle) }
                            // A ping when the exchange went quiet (to tell a dead connection), and at
                            // least every `maxSendSilence` whatever the traffic (the exchange's own rule).
                            if (idle >= settings.keepaliveAfter && pingedAt < last) || .nanoseconds(now - sentAt) >= settings.maxSendSilence {
                                try await outbound.write(.text(ping))
                                pingedAt = now
                                sentAt = now
                            }
                        }
                    }
                }
                group.addTask {
                    // A stop first asks the exchange to close and goes on reading what it sent before
                    // it saw the close (the reader ends with its close frame); cancellation, after
                    // the drain time, closes the socket at once.
                    await context.state.waitForStop()
                    try? await outbound.close(.goingAway, reason: "connector stopped")
                    return .closer
                }
                while let finished = try await group.next() {
                    if finished != .closer { break }
                }
                group.cancelAll()
            }
        }
    }

    /// Connects to `url` once the outbound policy allows it: to an address literal directly, to a
    /// host name through the egress gate, which connects to the address it checked. With
    /// `frames`, data frames go to the pipeline on the event loop (see `ExchangeFrameReader`).
    static func open(
        _ url: String,
        configuration: WebSocketClientConfiguration,
        settings: ConnectorRuntimeSettings,
        frames: FrameIngest? = nil,
        logger: Logger,
        handler: @escaping ExchangeWebSocketChannel.Handler
    ) async throws -> WebSocketCloseFrame? {
        // The host checked is the host connected to: one parse of the URL for both.
        guard let target = ExchangeWebSocketChannel.Target(url) else { throw OutboundRefused(detail: "not a ws:// or wss:// URL with a host") }
        try await settings.outbound.check(host: target.host)
        var proxy: (port: Int, headers: HTTPHeaders)?
        if let egress = settings.egress, EgressGate.isName(target.host) {
            proxy = (egress.port, ["Proxy-Authorization": egress.authorization])
        }
        let channel = try ExchangeWebSocketChannel(target: target, configuration: configuration, proxy: proxy, frames: frames, handler: handler)
        return try await channel.run(logger: logger)
    }

    /// What `POST /api/connectors/{id}/test` does for a WebSocket connector: connect, subscribe and
    /// wait for the first data message (acks and pongs are skipped), storing nothing.
    static func probe(_ definition: ConnectorDefinition, settings: ConnectorRuntimeSettings, logger: Logger) async throws -> [MarketMessage] {
        let configuration = WebSocketClientConfiguration(
            maxFrameSize: 1 << 24,
            additionalHeaders: headers(definition.secrets.headers),
            closeTimeout: .seconds(1),
            validateUTF8: false
        )
        let normalizer = Normalizer(exchange: definition.exchange, fieldMapping: definition.fieldMapping)
        let subscriptions = subscriptionFrames(definition.subscriptionMessage)
        let found = Mutex<Result<[MarketMessage], any Error>?>(nil)
        _ = try await open(url(definition), configuration: configuration, settings: settings, logger: logger) { inbound, outbound, _ in
            for frame in subscriptions { try await outbound.write(.text(frame)) }
            var iterator = inbound.makeAsyncIterator()
            while let message = try await iterator.nextMessage(maxSize: 1 << 24) {
                let normalized: NormalizedFrame
                do {
                    switch message {
                    case .text(let text): normalized = try normalizer.normalize(text: Array(text.utf8))
                    case .binary(let buffer): normalized = try normalizer.normalize(text: buffer.readableBytesView)
                    }
                } catch {
                    found.withLock { $0 = .failure(error) }
                    break
                }
                switch normalized {
                case .control: continue
                case .exchangeError(let detail): found.withLock { $0 = .failure(NormalizationError(detail)) }
                case .messages(let messages), .partial(let messages, _): found.withLock { $0 = .success(messages) }
                }
                break
            }
            try? await outbound.close(.normalClosure, reason: "test finished")
        }
        guard let result = found.withLock({ $0 }) else { throw NormalizationError("the connection closed before any data arrived") }
        return try result.get()
    }

    static func nowNanos() -> Int64 {
        let now = ContinuousClock.now - ContinuousClock.Instant.reference
        return now.components.seconds * 1_000_000_000 + now.components.attoseconds / 1_000_000_000
    }

    /// The URL with the connector's query parameters added.
    static func url(_ definition: ConnectorDefinition) -> String {
        guard !definition.secrets.queryParams.isEmpty, var components = URLComponents(string: definition.apiURL) else { return definition.apiURL }
        components.queryItems =
            (components.queryItems ?? [])
            + definition.secrets.queryParams.sorted { $0.key < $1.key }.map { URLQueryItem(name: $0.key, value: $0.value) }
        return components.string ?? definition.apiURL
    }

    static func headers(_ headers: [String: String]) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in headers { if let name = HTTPField.Name(name) { fields[name] = value } }
        return fields
    }
}

/// When the last frame arrived, shared by the reader and the keepalive task.
final class LastSeen: Sendable {
    let nanos = Atomic<Int64>(WebSocketConnector.nowNanos())
}

extension ContinuousClock.Instant {
    /// A fixed origin for storing instants as integers.
    static let reference = ContinuousClock.now
}
