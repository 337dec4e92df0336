import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Where connectors' connections to host names go: a small HTTP proxy on 127.0.0.1 (CONNECT
/// for TLS and WebSockets, absolute-form for plain HTTP) that resolves the name itself, checks
/// every address against the `OutboundPolicy`, and connects to exactly the address it checked.
/// So the check is made at connect time on the resolved address, and a name that resolves to a
/// public address for a check and to a private one a moment later (DNS rebinding) gains nothing.
/// Address literals need no resolving: they are checked and connected to directly.
///
/// Only this process can use it: every request must carry a `Proxy-Authorization` with a secret
/// made at startup, which is never forwarded.
public final class EgressGate: Service {
    public let policy: OutboundPolicy
    /// The gate's port on 127.0.0.1.
    public let port: Int
    /// The HTTP client for REST connectors whose URL names a host: every request goes through the gate.
    public let client: HTTPClient
    /// `Basic <base64>` of this process's credentials.
    let authorization: String
    let channel: any Channel

    /// Binds the gate on an ephemeral port of 127.0.0.1.
    public static func start(policy: OutboundPolicy, logger: Logger) async throws -> EgressGate {
        let password = UUID().uuidString + UUID().uuidString
        let authorization = "Basic " + Data("tributary:\(password)".utf8).base64EncodedString()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        EgressRequestHandler(policy: policy, authorization: authorization, logger: logger)
                    )
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return EgressGate(policy: policy, channel: channel, password: password, authorization: authorization)
    }

    init(policy: OutboundPolicy, channel: any Channel, password: String, authorization: String) {
        self.policy = policy
        self.channel = channel
        self.port = channel.localAddress?.port ?? 0
        self.authorization = authorization
        var configuration = HTTPClient.Configuration.singletonConfiguration
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.redirectConfiguration = .disallow
        configuration.proxy = .server(host: "127.0.0.1", port: port, authorization: .basic(username: "tributary", password: password))
        self.client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// True when `host` is a name (resolved by the gate), false for an address literal.
    public static func isName(_ host: String) -> Bool { CIDR.address(OutboundPolicy.bare(host)) == nil }

    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    /// Stops listening and shuts the proxied HTTP client down.
    public func close() async {
        try? await channel.close()
        try? await client.shutdown()
    }
}

/// One client connection of the gate: reads its request head, checks and connects to the
/// target, then relays bytes both ways. Refusals answer 403 with the reason and close.
final class EgressRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let maximumHeadBytes = 16 * 1024

    let policy: OutboundPolicy
    let authorization: String
    let logger: Logger
    var head = ByteBuffer()
    var started = false
    /// A client that has not sent its request head within 10 s is closed.
    var headTimeout: Scheduled<Void>?

    init(policy: OutboundPolicy, authorization: String, logger: Logger) {
        self.policy = policy
        self.authorization = authorization
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        headTimeout = context.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        headTimeout?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if started {
            // Arrived while connecting: kept behind the head, forwarded once connected.
            head.writeBuffer(&bytes)
            return
        }
        head.writeBuffer(&bytes)
        guard let end = head.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else {
            if head.readableBytes > Self.maximumHeadBytes {
                started = true
                refuse(context, status: "431 Request Header Fields Too Large", "head too large")
            }
            return
        }
        started = true
        headTimeout?.cancel()
        let headLength = end.upperBound - head.readerIndex
        let text = String(decoding: head.readableBytesView.prefix(headLength), as: UTF8.self)
        head.moveReaderIndex(forwardBy: headLength)
        var lines = text.components(separatedBy: "\r\n").filter { !$0.isEmpty }
        guard !lines.isEmpty else { return refuse(context, status: "400 Bad Request", "no request line") }
        let requestLine = lines.removeFirst()
        let parts = requestLine.split(separator: " ")
        let authorized = lines.contains { line in
            let pair = line.split(separator: ":", maxSplits: 1)
            return pair.count == 2 && pair[0].lowercased() == "proxy-authorization"
                && pair[1].trimmingCharacters(in: .whitespaces) == authorization
        }
        guard authorized else { return refuse(context, status: "407 Proxy Authentication Required", "not this process") }
        guard parts.count == 3 else { return refuse(context, status: "400 Bad Request", "bad request line") }
        let forwardedLines = lines.filter { !$0.lowercased().hasPrefix("proxy-") }
        let target: (host: String, port: Int)
        var preamble: ByteBuffer?
        if parts[0] == "CONNECT" {
            guard let parsed = Self.hostAndPort(String(parts[1]), defaultPort: 443) else {
                return refuse(context, status: "400 Bad Request", "bad CONNECT target")
            }
            target = parsed
        } else {
            guard let url = URLComponents(string: String(parts[1])), url.scheme?.lowercased() == "http", let host = url.host, !host.isEmpty else {
                return refuse(context, status: "400 Bad Request", "only CONNECT and absolute http:// requests")
            }
            target = (host, url.port ?? 80)
            preamble = ByteBuffer(string: ([requestLine] + forwardedLines).joined(separator: "\r\n") + "\r\n\r\n")
        }
        context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        let forward = preamble
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        let policy = self.policy
        let resolved = context.eventLoop.makePromise(of: [[UInt8]].self)
        resolved.completeWithTask { try await policy.checkedAddresses(of: target.host) }
        resolved.futureResult.flatMap { addresses in
            Self.connect(addresses[...], port: target.port, on: bound.value.context.eventLoop)
        }.whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .failure(let error as OutboundRefused):
                handler.logger.warning("egress refused", metadata: ["host": "\(target.host)", "error": "\(error)"])
                handler.refuse(context, status: "403 Forbidden", error.description)
            case .failure(let error):
                handler.refuse(context, status: "502 Bad Gateway", "could not connect to \(target.host): \(error)")
            case .success(let peer):
                handler.relay(context, to: peer, preamble: forward)
            }
        }
    }

    /// Connects to the first of `addresses` that answers, trying them in order.
    static func connect(_ addresses: ArraySlice<[UInt8]>, port: Int, on eventLoop: any EventLoop) -> EventLoopFuture<any Channel> {
        guard let address = addresses.first else {
            return eventLoop.makeFailedFuture(OutboundRefused(detail: "no address to connect to"))
        }
        let attempt: EventLoopFuture<any Channel>
        do {
            attempt = ClientBootstrap(group: eventLoop)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .connectTimeout(.seconds(10))
                .connect(to: try SocketAddress(packedIPAddress: ByteBuffer(bytes: address), port: port))
        } catch {
            attempt = eventLoop.makeFailedFuture(error)
        }
        let rest = addresses.dropFirst()
        return rest.isEmpty ? attempt : attempt.flatMapError { _ in connect(rest, port: port, on: eventLoop) }
    }

    /// Glues the client to `peer`: a CONNECT gets its 200 first; a plain request is forwarded as received.
    func relay(_ context: ChannelHandlerContext, to peer: any Channel, preamble: ByteBuffer?) {
        let (local, remote) = GlueHandler.pair()
        do {
            try peer.pipeline.syncOperations.addHandler(remote)
            if preamble == nil {
                context.write(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 Connection Established\r\n\r\n")), promise: nil)
                context.flush()
            }
            var pending = preamble ?? ByteBuffer()
            pending.writeBuffer(&head)
            if pending.readableBytes > 0 { peer.writeAndFlush(pending, promise: nil) }
            try context.pipeline.syncOperations.addHandler(local, position: .after(self))
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
        } catch {
            peer.close(promise: nil)
            context.close(promise: nil)
        }
    }

    func refuse(_ context: ChannelHandlerContext, status: String, _ detail: String) {
        let body = "outbound connection refused: \(detail)"
        let response = "HTTP/1.1 \(status)\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).whenComplete { _ in channel.close(promise: nil) }
    }

    /// `host:port` or `[v6]:port`.
    static func hostAndPort(_ text: String, defaultPort: Int) -> (host: String, port: Int)? {
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            let port = rest.hasPrefix(":") ? Int(rest.dropFirst()) : defaultPort
            return port.flatMap { (1...65535).contains($0) ? (host, $0) : nil }
        }
        let parts = text.split(separator: ":")
        guard parts.count <= 2, let host = parts.first.map(String.init), !host.isEmpty else { return nil }
        let port = parts.count == 2 ? Int(parts[1]) : defaultPort
        return port.flatMap { (1...65535).contains($0) ? (host, $0) : nil }
    }
}

/// Relays everything one channel reads to its partner, with backpressure (a side reads only
/// while its partner can write) and half-closure passed on.
final class GlueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    var partner: GlueHandler?
    var context: ChannelHandlerContext?
    var pendingRead = false

    static func pair() -> (GlueHandler, GlueHandler) {
        let first = GlueHandler()
        let second = GlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.context?.write(data, promise: nil) }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.context?.flush() }

    func channelInactive(context: ChannelHandlerContext) { partner?.context?.close(promise: nil) }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            partner?.context?.close(mode: .output, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        partner?.context?.close(promise: nil)
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let partner, partner.pendingRead {
            partner.pendingRead = false
            partner.context?.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.context?.channel.isWritable ?? true {
            context.read()
        } else {
            pendingRead = true
        }
    }
}
