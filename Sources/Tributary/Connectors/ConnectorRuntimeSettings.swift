/// Timing of connector runtimes. Defaults follow the exchanges' rules; tests scale them down.
public struct ConnectorRuntimeSettings: Sendable {
    public var backoff = Backoff()
    /// Reconnect attempts in a row before the connector gives up with status `error`.
    public var maxReconnectAttempts = 10
    /// A connection that stayed up this long resets the attempt count.
    public var stableAfter: Duration = .seconds(60)
    /// OKX drops connections idle for 30 s: send a text `ping` after this much silence.
    public var keepaliveAfter: Duration = .seconds(20)
    /// Exchanges with text pings get one at least this often whatever the traffic: OKX closes a
    /// connection whose client has sent nothing for 30 s, and Bybit asks for a ping every 20 s.
    public var maxSendSilence: Duration = .seconds(20)
    /// A connection that delivered data is followed by an immediate reconnect at most this often;
    /// more often than that, reconnects back off as failures do.
    public var immediateReconnectInterval: Duration = .seconds(1)
    /// After a keepalive ping, no data and no pong for this long means the connection is dead.
    public var deadAfter: Duration = .seconds(10)
    /// Protocol ping period for exchanges that use protocol pings (no pong before the next ping: dead).
    public var protocolPingPeriod: Duration = .seconds(20)
    /// How long a stop (or a server shutdown) waits (`CONNECTOR_STOP_DRAIN_MS`) for a WebSocket connection to close in good
    /// order: the close handshake, reading what the exchange sent before it saw the close. Past
    /// it the connection is closed at once, and what the exchange had sent but the connector had
    /// not read yet is lost; a warning says so.
    public var stopDrainTime: Duration = .seconds(5)
    /// How often live status and metrics are written to `connector_status`.
    public var statusInterval: Duration = .seconds(2)
    /// REST: how long one request may take, headers and body.
    public var restTimeout: Duration = .seconds(10)
    /// REST: the largest response body accepted; a larger one is recorded as an error.
    public var restMaxResponseBytes = 8 << 20
    /// REST: client errors (4xx other than 408/429) in a row before the connector reports `error`.
    public var restMaxRejections = 3
    /// Which addresses connectors may connect to (`TRIBUTARY_ALLOW_PRIVATE_TARGETS`).
    public var outbound = OutboundPolicy()
    /// Connections to host names go through this gate (nil: straight, after a check by name only).
    public var egress: EgressGate?

    public init() {}
}
