import Foundation
import Prometheus
import Synchronization

/// Live counters of one connector, touched once per message with atomics (no locks, no actor hops).
public final class ConnectorCounters: Sendable {
    public let received = Atomic<Int>(0)
    public let stored = Atomic<Int>(0)
    public let duplicates = Atomic<Int>(0)
    public let failed = Atomic<Int>(0)
    public let dropped = Atomic<Int>(0)
    /// Records refused at normalization because they could not be stored, and the last reason.
    public let rejected = Atomic<Int>(0)
    let lastRejection = Mutex<Rejection?>(nil)
    public let reconnects = Atomic<Int>(0)
    /// REST polls: requests sent, answered with data, and failed (HTTP errors, timeouts, bad bodies).
    public let polls = Atomic<Int>(0)
    public let pollSuccesses = Atomic<Int>(0)
    public let pollFailures = Atomic<Int>(0)
    /// Answered polls from which no market data could be extracted (the answer is stored anyway).
    public let extractionFailures = Atomic<Int>(0)
    public let lastResponseMicros = Atomic<Int>(0)
    /// Milliseconds since 1970 of the last message received.
    public let lastMessageMs = Atomic<Int64>(0)
    /// Time without a connection between one that ended and the next subscription, and the trades
    /// the exchange sent meanwhile: the gap in its trade ids, where they count up one by one
    /// per instrument (OKX, Binance, Coinbase).
    public let disconnectedMillis = Atomic<Int>(0)
    public let missedWhileDisconnected = Atomic<Int>(0)
    /// The last trade id seen per instrument, for the gap after a reconnect.
    let lastTradeIDs = Mutex<[String: Int64]>([:])
    let rate = Mutex<(at: ContinuousClock.Instant, received: Int, perSecond: Double)>((.now, 0, 0))

    public init() {}

    func reject(_ rejection: Rejection) {
        rejected.add(1, ordering: .relaxed)
        lastRejection.withLock { $0 = rejection }
    }

    /// Messages per second since the previous call (the status writer calls it every few seconds).
    func sampleRate() -> Double {
        let received = self.received.load(ordering: .relaxed)
        return rate.withLock { state in
            let now = ContinuousClock.now
            let elapsed = now - state.at
            let seconds = elapsed.inSeconds
            guard seconds >= 0.5 else { return state.perSecond }
            state.perSecond = Double(received - state.received) / seconds
            state.at = now
            state.received = received
            return state.perSecond
        }
    }
}

/// Counters of the whole pipeline and of each connector. Flush sizes and latencies go into
/// Prometheus histograms of `registry` (what `/metrics` shows).
public final class PipelineMetrics: Sendable {
    let connectors = Mutex<[String: ConnectorCounters]>([:])
    public let flushFailures = Atomic<Int>(0)
    public let registry: PrometheusCollectorRegistry
    let flushSize: ValueHistogram
    let flushDuration: DurationHistogram

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        flushSize = registry.makeValueHistogram(
            descriptor: MetricsExporter.descriptor("tributary_batch_flush_size", "Messages written per batch flush"),
            buckets: [1, 10, 50, 100, 500, 1000, 5000, 10_000]
        )
        flushDuration = registry.makeDurationHistogram(
            descriptor: MetricsExporter.descriptor("tributary_batch_flush_duration_seconds", "Time to write and commit one batch"),
            buckets: [
                .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
            ]
        )
    }

    /// The counters of `connectorID`, created on first use; they survive restarts of the connector.
    public func counters(for connectorID: String) -> ConnectorCounters {
        connectors.withLock { connectors in
            if let existing = connectors[connectorID] { return existing }
            let created = ConnectorCounters()
            connectors[connectorID] = created
            return created
        }
    }

    public func remove(_ connectorID: String) {
        _ = connectors.withLock { $0.removeValue(forKey: connectorID) }
    }

    /// Records a committed flush: per connector, how many messages were new and how many already stored.
    func recordFlush(outcomes: [String: (stored: Int, duplicates: Int)], latency: Duration) {
        flushSize.record(Double(outcomes.values.reduce(0) { $0 + $1.stored + $1.duplicates }))
        flushDuration.record(latency)
        for (id, outcome) in outcomes {
            let counters = counters(for: id)
            counters.stored.add(outcome.stored, ordering: .relaxed)
            counters.duplicates.add(outcome.duplicates, ordering: .relaxed)
        }
    }

    func recordFlushFailure() {
        flushFailures.add(1, ordering: .relaxed)
    }
}
