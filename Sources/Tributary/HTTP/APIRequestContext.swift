import Hummingbird
import NIOCore

/// A request context that can reach its connection: a handler that refuses a body it could not
/// drain in time closes the connection rather than leave the client writing into a stalled socket.
public protocol ConnectionContext: RequestContext {
    var channel: any Channel { get }
}

/// The API's request context: Hummingbird's basic context plus the connection.
public struct APIRequestContext: ConnectionContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }
}
