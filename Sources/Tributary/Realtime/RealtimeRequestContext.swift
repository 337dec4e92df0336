import Hummingbird
import HummingbirdWebSocket
import NIOCore

/// The request context of `/api/realtime`: a WebSocket context that keeps its channel, so a
/// stalled client whose socket no longer accepts writes (not even a close frame) can be cut off.
public struct RealtimeRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<Self>
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
        self.channel = source.channel
    }
}
