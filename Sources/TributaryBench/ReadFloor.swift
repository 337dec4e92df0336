import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import Synchronization
import Tributary

/// The reading floor of `bench ingest --rate`: what merely reading the same stream costs with the
/// connectors' own reader (`ExchangeWebSocketChannel` and its `ExchangeFrameReader`), frames only
/// counted on the event loop instead of normalized, and reads held as the server's writer holds
/// them at its `BATCH_LINGER_MS`. A second fake exchange paced at the same rate, one trade a
/// frame over the same instruments; the process's CPU from the first frame to the last (the
/// bench's realtime client and stall probe are stopped by then, the server is another process).
enum ReadFloor {
    static func measure(
        rate: Double,
        seconds: Double,
        instruments: [String],
        linger: Duration,
        directory: String,
        logger: Logger
    ) async throws -> FloorMeasurement {
        let total = Int(rate * seconds)
        let port = ClusterBenchmark.Instance.freePort()
        let exchange = try ClusterBenchmark.Child(
            executable: URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path,
            arguments: [
                "simulate", "--port", "\(port)", "--rate", "\(rate)", "--total", "\(total)", "--trades-per-frame", "1", "--instruments",
                instruments.joined(separator: ","),
            ],
            environment: ["PATH=/usr/bin:/bin"],
            log: directory + "/read-floor-exchange.log"
        )
        defer { exchange.stop(signal: SIGKILL) }
        return try await read(port: port, total: total, instruments: instruments, linger: linger, within: .seconds(seconds + 30), logger: logger)
    }

    /// Subscribes to `instruments` at the fake exchange on `port` and counts `total` trade frames;
    /// fails if that takes longer than `within` (the read is cancelled then).
    static func read(
        port: Int,
        total: Int,
        instruments: [String],
        linger: Duration,
        within: Duration,
        logger: Logger
    ) async throws -> FloorMeasurement {
        try await withThrowingTaskGroup(of: FloorMeasurement?.self) { group in
            group.addTask { try await readAll(port: port, total: total, instruments: instruments, linger: linger, logger: logger) }
            group.addTask {
                try await Task.sleep(for: within)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let measurement = first else {
                throw BenchmarkError("the reading floor did not read \(total) trades within \(within)")
            }
            return measurement
        }
    }

    private static func readAll(port: Int, total: Int, instruments: [String], linger: Duration, logger: Logger) async throws -> FloorMeasurement {
        let subscription = JSONValue.object([
            "op": "subscribe", "args": .array(instruments.map { .object(["channel": "trades", "instId": .string($0)]) }),
        ]).serialized
        let configuration = WebSocketClientConfiguration(maxFrameSize: 1 << 24, validateUTF8: false)
        guard let target = ExchangeWebSocketChannel.Target("ws://127.0.0.1:\(port)/ws/v5/public") else {
            throw BenchmarkError("the reading floor's exchange URL does not parse")
        }
        while true {
            let sink = FrameCounter(total: total, linger: linger)
            do {
                let channel = try ExchangeWebSocketChannel(target: target, configuration: configuration, proxy: nil, frames: sink) {
                    inbound,
                    outbound,
                    _ in
                    try await outbound.write(.text(subscription))
                    await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            // Messages the reader hands on (none at one trade a frame), in order.
                            var iterator = inbound.makeAsyncIterator()
                            while let message = try await iterator.nextMessage(maxSize: 1 << 24) {
                                if case .text(let text) = message { _ = sink.take(ByteBufferView(ByteBuffer(string: text))) }
                                sink.handedOff.subtract(1, ordering: .releasing)
                            }
                        }
                        await sink.waitForAll()
                        group.cancelAll()
                    }
                }
                _ = try await channel.run(logger: logger)
            } catch {
                // Counted in full: an error closing the connection afterwards (a cancelled
                // handler, say) changes nothing.
                if let measurement = sink.measurement { return measurement }
                // The exchange may not listen yet.
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            guard let measurement = sink.measurement else { throw BenchmarkError("the reading floor's exchange sent fewer than two trades") }
            return measurement
        }
    }
}

/// The reading floor's sink: counts trade frames (the subscription's acks are not part of the
/// stream), reads CPU and time at the first and the last (not per frame), and tells the reader
/// when it may hold its reads the way `IngestBuffer` does for the batch writer: a writer that
/// lingers takes whatever waits at most once per `linger`.
final class FrameCounter: FrameSink {
    struct State {
        var frames = 0
        var start: (cpu: Double, time: ContinuousClock.Instant)?
        var measurement: FloorMeasurement?
    }

    static let tradePrefix = Array(#"{"arg""#.utf8)
    let total: Int
    let lingerNanos: UInt64
    let handedOff = Atomic<Int>(0)
    private let until = Atomic<UInt64>(0)
    private let state = Mutex(State())
    private let (done, finished) = AsyncStream.makeStream(of: Void.self)

    init(total: Int, linger: Duration) {
        self.total = total
        lingerNanos = UInt64(clamping: linger.inMilliseconds) &* 1_000_000
    }

    var measurement: FloorMeasurement? { state.withLock { $0.measurement } }

    func waitForAll() async {
        for await _ in done {}
    }

    func take(_ frame: ByteBufferView) -> Bool {
        let now = NIODeadline.now().uptimeNanoseconds
        if lingerNanos > 0, now >= until.load(ordering: .relaxed) { until.store(now &+ lingerNanos, ordering: .relaxed) }
        guard frame.starts(with: Self.tradePrefix) else { return true }
        let total = self.total
        let complete = state.withLock { state -> Bool in
            state.frames += 1
            guard state.frames > 1 else {
                state.start = (ClusterBenchmark.CPUTime.of(pid: getpid()), .now)
                return false
            }
            guard state.frames == total, let start = state.start else { return false }
            state.measurement = FloorMeasurement(
                name: "reading floor",
                description:
                    "the same stream from a second fake exchange, \(total - 1) frames read by the connectors' reader in this process and only counted",
                count: total - 1,
                unit: "a frame",
                cpuSeconds: ClusterBenchmark.CPUTime.of(pid: getpid()) - start.cpu,
                elapsed: (ContinuousClock.now - start.time).inSeconds
            )
            return true
        }
        if complete { finished.finish() }
        return true
    }

    func readComplete() {}
    func handingOff() { handedOff.add(1, ordering: .releasing) }
    var messagesHandedOff: Int { handedOff.load(ordering: .acquiring) }
    var readsMayWaitUntil: UInt64 { until.load(ordering: .relaxed) }
    func paused() {}
    func hasRoom() -> Bool { true }
    func resumed(pausedSince: ContinuousClock.Instant) {}
}
