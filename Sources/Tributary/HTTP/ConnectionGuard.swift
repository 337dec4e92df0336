import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import Synchronization

/// Limits on the server's connections, enforced before any HTTP parsing:
/// - at most `maxConnections` open at once (HTTP and realtime); one more is answered
///   `503` with the error body and closed;
/// - a connection must finish its first request head within `headerTimeout` (slow-header
///   clients are closed); later requests on a kept-alive connection fall under the idle timeout.
public final class ConnectionLimits: Sendable {
    public let maxConnections: Int
    public let headerTimeout: Duration
    let open = Atomic<Int>(0)

    public init(maxConnections: Int, headerTimeout: Duration) {
        self.maxConnections = maxConnections
        self.headerTimeout = headerTimeout
    }

    /// Connections open right now.
    public var openConnections: Int { open.load(ordering: .relaxed) }

    /// Claims a slot; false (and nothing claimed) when all are taken.
    func claim() -> Bool {
        while true {
            let current = open.load(ordering: .relaxed)
            guard current < maxConnections else { return false }
            if open.compareExchange(expected: current, desired: current + 1, ordering: .relaxed).exchanged { return true }
        }
    }

    func release() { open.subtract(1, ordering: .relaxed) }

    /// The server: HTTP/1 with the realtime WebSocket upgrade, behind these limits.
    public func server(
        webSocketRouter: Router<RealtimeRequestContext>,
        configuration: HTTP1WebSocketUpgradeChannel.Configuration
    ) -> HTTPServerBuilder {
        let webSocketResponder = webSocketRouter.buildResponder()
        return HTTPServerBuilder { responder in
            GuardedChannel(
                base: HTTP1WebSocketUpgradeChannel(responder: responder, webSocketResponder: webSocketResponder, configuration: configuration),
                limits: self
            )
        }
    }
}

/// A server child channel with a `ConnectionGuardHandler` in front of everything else.
struct GuardedChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base
    let limits: ConnectionLimits

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ConnectionGuardHandler(limits: limits), position: .first)
        }.flatMap { base.setup(channel: channel, logger: logger) }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// Counts the connection against the limit (or refuses it), and closes it if its first request
/// head (up to the blank line) has not arrived within the header timeout.
final class ConnectionGuardHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let limits: ConnectionLimits
    var claimed = false
    var refused = false
    var headSeen = false
    /// The last bytes seen, to find `\r\n\r\n` across reads.
    var tail: UInt32 = 0
    var timeout: Scheduled<Void>?

    init(limits: ConnectionLimits) { self.limits = limits }

    static let refusal: String = {
        let body = #"{"detail":"The server has too many open connections; try again shortly","error_code":"TOO_MANY_CONNECTIONS"}"#
        return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Retry-After: 1\r\nConnection: close\r\n\r\n" + body
    }()

    func handlerAdded(context: ChannelHandlerContext) {
        guard limits.claim() else {
            // Answer, end our side, and read and drop what the client sends for a moment: closing
            // with its request unread would reset the connection before it reads the 503.
            refused = true
            context.writeAndFlush(NIOAny(ByteBuffer(string: Self.refusal)), promise: nil)
            context.close(mode: .output, promise: nil)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .seconds(1)) { bound.value.close(promise: nil) }
            return
        }
        claimed = true
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let (seconds, attoseconds) = limits.headerTimeout.components
        timeout = context.eventLoop.scheduleTask(in: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)) {
            bound.value.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if refused { return }
        if !headSeen {
            let buffer = unwrapInboundIn(data)
            for byte in buffer.readableBytesView {
                tail = tail << 8 | UInt32(byte)
                if tail == 0x0D0A_0D0A {
                    headSeen = true
                    timeout?.cancel()
                    timeout = nil
                    break
                }
            }
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        releaseSlot()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        releaseSlot()
    }

    func releaseSlot() {
        timeout?.cancel()
        timeout = nil
        if claimed {
            claimed = false
            limits.release()
        }
    }
}
