/// Reconnect delays: 1 s, 2 s, 4 s, 8 s … capped (30 s), each with ±20 % jitter so many
/// connectors dropped at once do not reconnect in lockstep.
public struct Backoff: Sendable, Equatable {
    public var base: Duration
    public var cap: Duration
    public var jitter: Double

    public init(base: Duration = .seconds(1), cap: Duration = .seconds(30), jitter: Double = 0.2) {
        self.base = base
        self.cap = cap
        self.jitter = jitter
    }

    /// The delay before reconnect attempt `attempt` (1-based); `random` is in 0..<1.
    public func delay(attempt: Int, random: Double) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let nominal = min(base * (1 << exponent), cap)
        let factor = 1 + jitter * (2 * random - 1)
        return nominal * factor
    }

    public func delay(attempt: Int) -> Duration {
        delay(attempt: attempt, random: Double.random(in: 0..<1))
    }
}
