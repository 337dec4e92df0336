import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// `GET /api/realtime`: a WebSocket that receives every committed message matching its filters.
///
/// Filters come from the query string (`connector_id`, `exchange`, `instrument`, each repeatable)
/// and from `{"action":"subscribe"|"unsubscribe", ...}` messages. The server sends `connected`
/// first, `data_update` after each commit, `ping` every `pingInterval`, and `error` for bad client
/// messages. A client whose queue keeps overflowing for `overflowGrace` is closed with 1008.
public struct RealtimeEndpoint: Sendable {
    let broadcaster: Broadcaster
    let pingInterval: Duration
    let overflowGrace: Duration
    /// Most clients at once; one more is told so and closed with 1013 (try again later).
    let maxClients: Int
    let logger: Logger

    /// Most filter values (connector ids, exchanges and instruments together) one client may hold.
    static let maxFilterValues = 100

    public init(
        broadcaster: Broadcaster,
        pingInterval: Duration = .seconds(30),
        overflowGrace: Duration = .seconds(5),
        maxClients: Int = 256,
        logger: Logger
    ) {
        self.broadcaster = broadcaster
        self.pingInterval = pingInterval
        self.overflowGrace = overflowGrace
        self.maxClients = maxClients
        self.logger = logger
    }

    static let filterKeys: [(String, any WritableKeyPath<RealtimeFilter, Set<String>> & Sendable)] = [
        ("connector_id", \.connectorIDs), ("exchange", \.exchanges), ("instrument", \.instruments),
    ]

    static func filter(from request: Request) -> RealtimeFilter {
        var filter = RealtimeFilter()
        let parameters = request.uri.queryParameters
        for (key, path) in filterKeys {
            filter[keyPath: path] = Set(parameters.getAll(key).flatMap { $0.split(separator: ",").map(String.init) })
        }
        return filter
    }

    public func handle(_ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter, request: Request, channel: any Channel) async throws {
        // The upgrade router can only answer a bare 400, so limits are told on the socket instead.
        let filter = Self.filter(from: request)
        func refuse(_ detail: String, _ code: String, _ closeCode: WebSocketErrorCode) async throws {
            try await outbound.write(.text(JSONValue.object(["type": "error", "detail": .string(detail), "error_code": .string(code)]).serialized))
            try await outbound.close(closeCode, reason: code)
        }
        if broadcaster.clientCount >= maxClients {
            let detail = "The server has \(maxClients) realtime clients, its most (MAX_REALTIME_CLIENTS); try again later"
            return try await refuse(detail, "TOO_MANY_CLIENTS", .unknown(1013))
        }
        let accepted = Set(Self.filterKeys.map(\.0) + ["token"])
        if let unknown = request.uri.queryParameters.first(where: { !accepted.contains(String($0.key)) }) {
            let detail = "\(unknown.key) is not a parameter of /api/realtime; accepted: \(accepted.sorted().joined(separator: ", "))"
            return try await refuse(detail, "UNKNOWN_PARAMETER", .policyViolation)
        }
        if filter.valueCount > Self.maxFilterValues {
            return try await refuse("At most \(Self.maxFilterValues) filter values per client", "TOO_MANY_FILTERS", .policyViolation)
        }
        let client = broadcaster.register(filter: filter)
        defer { broadcaster.unregister(client) }
        let sessionID = "rt_" + UUID().uuidString.lowercased().prefix(12)
        var logger = self.logger
        logger[metadataKey: "session_id"] = "\(sessionID)"
        logger.debug("realtime client connected")
        let sessionLogger = logger
        try await outbound.write(
            .text(
                JSONValue.object(["type": "connected", "session_id": .string(String(sessionID)), "server_time": .string(Timestamp.format(Date()))])
                    .serialized
            )
        )
        try? await withThrowingTaskGroup(of: Void.self) { group in
            // Updates go out from the channel's event loop, woken by the broadcaster (no task).
            client.wake(ChannelSender(client: client, channel: channel))
            group.addTask {
                while true {
                    try await Task.sleep(for: pingInterval)
                    try await outbound.write(
                        .text(JSONValue.object(["type": "ping", "timestamp": .string(Timestamp.format(Date()))]).serialized)
                    )
                }
            }
            group.addTask {
                // A stalled client stops the sender inside a write, so overflow is watched separately.
                var overflowingSince: ContinuousClock.Instant?
                while true {
                    try await Task.sleep(for: .milliseconds(250))
                    if client.takeDropsSinceCheck() > 0 {
                        let since = overflowingSince ?? .now
                        overflowingSince = since
                        if ContinuousClock.now - since >= overflowGrace {
                            sessionLogger.warning("closing a realtime client that cannot keep up", metadata: ["dropped": "\(client.droppedCount)"])
                            await Self.closeSlowClient(channel: channel, logger: sessionLogger)
                            return
                        }
                    } else {
                        overflowingSince = nil
                    }
                }
            }
            group.addTask {
                for try await message in inbound.messages(maxSize: 1 << 16) {
                    guard case .text(let text) = message else { continue }
                    if let error = Self.apply(text, to: client) {
                        try await outbound.write(.text(error.serialized))
                    }
                }
            }
            // The first task to finish (the client left, or was too slow) ends the session.
            defer {
                client.close()
                group.cancelAll()
            }
            try await group.next()
        }
        logger.debug("realtime client disconnected", metadata: ["dropped": "\(client.droppedCount)"])
    }

    /// Queues a 1008 close frame behind the updates already sent. If it reaches the socket within
    /// a second, the connection is closed normally: the client reads what was sent, the 1008 and
    /// then the end of the stream. If not, the client takes no data at all and the connection is
    /// reset (SO_LINGER 0), which frees the megabytes its socket holds at once instead of keeping
    /// them in an orphaned socket for as long as the kernel probes a zero window (nginx's
    /// `reset_timedout_connection` does the same). Either way the sender's pending write fails.
    static func closeSlowClient(channel: any Channel, logger: Logger) async {
        var payload = channel.allocator.buffer(capacity: 40)
        payload.write(webSocketErrorCode: .policyViolation)
        payload.writeString("client too slow: updates dropped")
        let written = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload), promise: written)
        let delivered = await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await written.futureResult.get()) != nil }
            group.addTask {
                try? await Task.sleep(for: .seconds(1))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            if !first {
                // Also ends the write still waiting in the group.
                try? await (channel as? any SocketOptionProvider)?.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
                try? await channel.close()
            }
            return first
        }
        if delivered { try? await channel.close() }
        logger.debug(delivered ? "closed the slow realtime client's connection with 1008" : "reset the stalled realtime client's connection")
    }

    /// Applies a client message; returns the `error` message to send back, if any.
    static func apply(_ text: String, to client: RealtimeClientQueue) -> JSONValue? {
        func error(_ detail: String, _ code: String = "INVALID_MESSAGE") -> JSONValue {
            .object(["type": "error", "detail": .string(detail), "error_code": .string(code)])
        }
        guard let message = try? JSONValue.parse(text), message.objectValue != nil else {
            return error("Messages must be JSON objects such as {\"action\":\"subscribe\",\"instrument\":\"BTC-USDT\"}")
        }
        guard let action = message["action"]?.stringValue else { return error("Missing \"action\"") }
        switch action {
        case "pong", "ping": return nil
        case "subscribe", "unsubscribe":
            var changes: [(WritableKeyPath<RealtimeFilter, Set<String>>, [String])] = []
            for (key, path) in filterKeys {
                guard let value = message[key] else { continue }
                let values = value.stringValue.map { [$0] } ?? value.arrayValue?.compactMap(\.stringValue)
                guard let values, value.arrayValue?.count ?? 1 == values.count else {
                    return error("\"\(key)\" must be a string or a list of strings")
                }
                changes.append((path, values))
            }
            for key in message.objectValue?.keys ?? [] where key != "action" && !filterKeys.contains(where: { $0.0 == key }) {
                return error("Unknown field \"\(key)\"; use connector_id, exchange or instrument")
            }
            var filter = client.filter
            for (path, values) in changes {
                if action == "subscribe" {
                    filter[keyPath: path].formUnion(values)
                } else {
                    filter[keyPath: path].subtract(values)
                }
            }
            guard filter.valueCount <= maxFilterValues else {
                return error("At most \(maxFilterValues) filter values per client; unsubscribe some first", "TOO_MANY_FILTERS")
            }
            // Only this client's reader task changes its filter, so reading then writing it is safe.
            client.filter = filter
            return nil
        default:
            return error("Unknown action \"\(action)\"; use subscribe, unsubscribe or pong", "UNKNOWN_ACTION")
        }
    }
}

/// Sends one client's queued updates from its channel's event loop. An enqueue wakes it (at most
/// one wake-up is pending at a time); it writes everything queued as one buffer of ready-made
/// frames (`RealtimeFrame`, shared between clients) with one flush, and looks again when that
/// write has reached the socket. So a stalled client holds no more than one take in the server's
/// memory while its queue (bounded, oldest dropped) absorbs the backlog, and a burst costs one
/// event-loop task per client, not a task hop per update.
///
/// The frames are already encoded, so they are written from the WebSocket frame encoder's place
/// in the pipeline, past it: no WebSocket extensions are negotiated, so nothing else would change
/// them on the way. Pings and error messages still go through the encoder; frames are whole
/// writes either way, so they never interleave.
final class ChannelSender: RealtimeSender {
    let client: RealtimeClientQueue
    let channel: any Channel
    /// A drain is scheduled or a write is in flight.
    private let busy = Atomic<Bool>(false)
    /// The frame encoder's context, found on the first drain.
    private let encoder: NIOLoopBoundBox<ChannelHandlerContext?>

    init(client: RealtimeClientQueue, channel: any Channel) {
        self.client = client
        self.channel = channel
        self.encoder = .makeEmptyBox(valueType: ChannelHandlerContext.self, eventLoop: channel.eventLoop)
    }

    func wake() {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        channel.eventLoop.execute { self.drain() }
    }

    private func drain() {
        let frames = client.takeQueued()
        guard !frames.isEmpty else { return idle() }
        guard let encoder = encoderContext() else {
            // Not a pipeline this server builds; nothing could be sent on it.
            channel.close(promise: nil)
            return
        }
        let written = encoder.writeAndFlush(NIOAny(RealtimeFrame.joined(frames, allocator: channel.allocator)))
        written.whenComplete { [self] result in
            switch result {
            case .success: idle()
            case .failure: channel.close(promise: nil)
            }
        }
    }

    /// Done for now: the next enqueue wakes the sender again, or this does when something is
    /// queued already (a queued drain, not a call: a write that completes at once must not recurse).
    private func idle() {
        busy.store(false, ordering: .releasing)
        // An enqueue between the take and the store saw `busy` and left it to this drain.
        if client.updates.count > 0 { wake() }
    }

    private func encoderContext() -> ChannelHandlerContext? {
        if let found = encoder.value { return found }
        let found = try? channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        encoder.value = found
        return found
    }
}
