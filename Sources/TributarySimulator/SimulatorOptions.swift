/// What the built-in fake exchange sends and which faults it injects.
public struct SimulatorOptions: Sendable {
    /// Trades per second on each connection; 0 sends as fast as the socket takes them.
    public var rate: Double = 100
    /// Trades to send in total (across reconnects), 0 for unlimited.
    public var total: Int = 0
    /// Instruments offered, `BASE-QUOTE`.
    public var instruments: [String] = ["BTC-USDT", "ETH-USDT"]
    /// Close the connection after every this many trades on it (0: never).
    public var dropEvery: Int = 0
    /// Send a malformed frame after every this many trades (0: never); it is not counted as a trade.
    public var malformedEvery: Int = 0
    /// OKX: after every this many trades (per instrument) add a hostile record to the frame (0:
    /// never), cycling through values no store keeps and a record without a price (see
    /// `FakeExchange.hostileRecord`); every seventh is instead a separate frame with an unpaired
    /// surrogate escape. Not counted as trades.
    public var hostileEvery: Int = 0
    /// OKX rule: close with 4004 when the client has sent nothing for this long (data sent to it does not count).
    public var idleTimeout: Duration = .seconds(30)
    /// Binance rule: protocol ping period (no pong before the next ping closes the connection).
    public var pingInterval: Duration = .seconds(20)
    /// Trades per frame for OKX (its `data` array) when sending as fast as possible.
    public var tradesPerFrame = 1
    /// Trades per frame in turn, one entry a frame, cycling (OKX, as fast as possible); when not
    /// empty it takes the place of `tradesPerFrame`. Mixes small and large frames.
    public var tradesPerFramePattern: [Int] = []
    /// Seeds the market (prices, sizes, sides, and the rhythm with `bursts`): the same seed gives
    /// the same trades.
    public var seed: UInt64 = 1
    /// Vary the rate between lulls and bursts around `rate` instead of sending evenly.
    public var bursts = false
    /// At a set rate, a connection that wakes to send a trade also sends the trades due within
    /// this long after it, early: one wake-up for several trades, each still a frame of its own
    /// (0: every trade at its own time). The rate over a second is unchanged.
    public var coalesce: Duration = .zero

    public init() {}
}
