import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import WSClient
@_spi(WSInternal) import WSCore

/// How a connector's WebSocket connection is set up: `WebSocketClient`'s handshake, TLS and
/// proxy steps (swift-websocket's `WebSocketClientChannel`), plus an `ExchangeFrameReader` in front
/// of the frames when frames go to the pipeline. What that reader hands on (control frames, large
/// or fragmented messages) goes to swift-websocket's `WebSocketHandler` (pings, the close
/// handshake, size limits) and the connection's handler, as with `WebSocketClient`.
package struct ExchangeWebSocketChannel: ClientConnectionChannel {
    package enum UpgradeResult: Sendable {
        case websocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>)
        case notUpgraded
    }

    /// What the connection's handler is given besides the streams.
    package struct Context: WebSocketContext {
        package let logger: Logger
    }

    package typealias Value = EventLoopFuture<UpgradeResult>
    package typealias Handler = WebSocketDataHandler<Context>

    let target: Target
    let configuration: WebSocketClientConfiguration
    /// The egress gate to connect through (a CONNECT request with these headers), if any.
    let proxy: (port: Int, headers: HTTPHeaders)?
    let sslContext: NIOSSLContext?
    /// Where data frames go on the event loop (see `ExchangeFrameReader`); nil: all to `handler`.
    let frames: (any FrameSink)?
    let handler: Handler

    /// Where the connection goes: host, port, the request's path and query, and whether TLS is used.
    package struct Target: Sendable, Equatable {
        let host: String
        let port: Int
        let requestURI: String
        let tls: Bool
        let hostHeader: String
        let origin: String

        package init?(_ url: String) {
            guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
                let host = components.host, !host.isEmpty
            else { return nil }
            switch scheme {
            case "ws", "http": tls = false
            case "wss", "https": tls = true
            default: return nil
            }
            self.host = OutboundPolicy.bare(host)
            port = components.port ?? (tls ? 443 : 80)
            guard (1...65_535).contains(port) else { return nil }
            let path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
            requestURI = path + (components.percentEncodedQuery.map { "?\($0)" } ?? "")
            hostHeader = components.port.map { "\(host):\($0)" } ?? host
            origin = "\(scheme)://\(host)"
        }
    }

    package init(
        target: Target,
        configuration: WebSocketClientConfiguration,
        proxy: (port: Int, headers: HTTPHeaders)?,
        frames: (any FrameSink)?,
        handler: @escaping Handler
    ) throws {
        self.target = target
        self.configuration = configuration
        self.proxy = proxy
        self.frames = frames
        self.handler = handler
        sslContext = target.tls ? try NIOSSLContext(configuration: .makeClientConfiguration()) : nil
    }

    /// Connects (to the egress gate when there is one), then upgrades, and runs the handler.
    package func run(logger: Logger) async throws -> WebSocketCloseFrame? {
        let address = proxy.map { ClientConnection<Self>.Address.hostname("127.0.0.1", port: $0.port) } ?? .hostname(target.host, port: target.port)
        return try await ClientConnection(self, address: address, logger: logger).run()
    }

    package func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        guard let proxy else {
            return channel.eventLoop.makeCompletedFuture { try upgrade(channel: channel, logger: logger) }
        }
        let connected = channel.eventLoop.makePromise(of: Void.self)
        let upgraded = channel.eventLoop.makePromise(of: UpgradeResult.self)
        connected.futureResult.whenComplete { result in
            switch result {
            case .failure(let error as NIOHTTP1ProxyConnectHandler.Error) where error == .httpProxyHandshakeTimeout():
                upgraded.fail(WebSocketClientError.proxyHandshakeTimeout)
            case .failure(let error):
                upgraded.fail(error is NIOHTTP1ProxyConnectHandler.Error ? WebSocketClientError.proxyHandshakeFailed : error)
            case .success:
                channel.pipeline.removeHandler(name: "ProxyRequestEncoder")
                    .flatMap { channel.pipeline.removeHandler(name: "ProxyResponseDecoder") }
                    .flatMap { () -> Value in
                        do { return try upgrade(channel: channel, logger: logger) } catch { return channel.eventLoop.makeFailedFuture(error) }
                    }
                    .cascade(to: upgraded)
            }
        }
        return channel.eventLoop.makeCompletedFuture {
            let operations = channel.pipeline.syncOperations
            try operations.addHandler(HTTPRequestEncoder(), name: "ProxyRequestEncoder")
            try operations.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)), name: "ProxyResponseDecoder")
            try operations.addHandler(
                NIOHTTP1ProxyConnectHandler(
                    targetHost: target.host,
                    targetPort: target.port,
                    headers: proxy.headers,
                    deadline: .now() + .seconds(10),
                    promise: connected
                )
            )
            return upgraded.futureResult
        }
    }

    /// Adds TLS (if any) and the HTTP upgrade to WebSocket; the frame reader goes in once upgraded.
    private func upgrade(channel: any Channel, logger: Logger) throws -> Value {
        let frames = self.frames
        let upgrader = NIOTypedWebSocketClientUpgrader<UpgradeResult>(
            maxFrameSize: configuration.maxFrameSize,
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    if let frames { try channel.pipeline.syncOperations.addHandler(ExchangeFrameReader(sink: frames)) }
                    return .websocket(try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: channel))
                }
            }
        )
        var headers = HTTPHeaders()
        headers.replaceOrAdd(name: "Host", value: target.hostHeader)
        headers.replaceOrAdd(name: "Origin", value: target.origin)
        headers.add(contentsOf: HTTPHeaders(configuration.additionalHeaders.map { ($0.name.rawName, $0.value) }))
        let request = HTTPRequestHead(version: .http1_1, method: .GET, uri: target.requestURI, headers: headers)
        var pipeline = NIOUpgradableHTTPClientPipelineConfiguration(
            upgradeConfiguration: NIOTypedHTTPClientUpgradeConfiguration(
                upgradeRequestHead: request,
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in channel.eventLoop.makeSucceededFuture(.notUpgraded) }
            )
        )
        pipeline.leftOverBytesStrategy = .forwardBytes
        if let sslContext {
            let serverName = EgressGate.isName(target.host) ? target.host : nil
            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: serverName), position: .first)
        }
        return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: pipeline)
    }

    package func handle(value: Value, logger: Logger) async throws -> WebSocketCloseFrame? {
        guard case .websocket(let channel) = try await value.get() else { throw WebSocketClientError.webSocketUpgradeFailed }
        do {
            return try await WebSocketHandler.handle(
                type: .client,
                configuration: .init(
                    extensions: [],
                    autoPing: configuration.autoPing,
                    closeTimeout: configuration.closeTimeout,
                    validateUTF8: configuration.validateUTF8,
                    ignoreUncleanSSLShutdownErrors: configuration.ignoreUncleanSSLShutdownErrors,
                    maxFrameSize: configuration.maxFrameSize
                ),
                asyncChannel: channel,
                context: Context(logger: logger),
                handler: handler
            )
        } catch  where String(describing: type(of: error)) == "InternalError" {
            // swift-websocket's own close for a frame it refused (its type is not public): the
            // same error `WebSocketClient` reports for it.
            throw WebSocketClientError.serverProtocolError
        }
    }
}
