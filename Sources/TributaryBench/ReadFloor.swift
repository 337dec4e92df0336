import Foundation
import HummingbirdWSClient
import Logging
import Synchronization
import Tributary

/// The reading floor of `bench ingest --rate`: what merely reading the same stream costs with
/// `HummingbirdWSClient`, the WebSocket client the connectors used until they read frames on the
/// event loop (`ExchangeFrameReader`, which costs less), whatever is done with the frames. A second fake exchange paced at the same rate, one trade a
/// frame over the same instruments, and a client in the bench process that subscribes and counts
/// the frames, nothing else; the process's CPU from the first frame to the last (the bench's
/// realtime client and stall probe are stopped by then, the server is another process).
enum ReadFloor {
    static func measure(rate: Double, seconds: Double, instruments: [String], directory: String, logger: Logger) async throws -> FloorMeasurement {
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
        return try await read(port: port, total: total, instruments: instruments, within: .seconds(seconds + 30), logger: logger)
    }

    /// Subscribes to `instruments` at the fake exchange on `port` and counts `total` trade frames;
    /// fails if that takes longer than `within` (the read is cancelled then).
    static func read(port: Int, total: Int, instruments: [String], within: Duration, logger: Logger) async throws -> FloorMeasurement {
        try await withThrowingTaskGroup(of: FloorMeasurement?.self) { group in
            group.addTask { try await readAll(port: port, total: total, instruments: instruments, logger: logger) }
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

    private static func readAll(port: Int, total: Int, instruments: [String], logger: Logger) async throws -> FloorMeasurement {
        let subscription = JSONValue.object([
            "op": "subscribe", "args": .array(instruments.map { .object(["channel": "trades", "instId": .string($0)]) }),
        ]).serialized
        // CPU and time at the first trade and after the last (read twice, not per frame).
        let result = Mutex<FloorMeasurement?>(nil)
        let configuration = WebSocketClientConfiguration(maxFrameSize: 1 << 24, validateUTF8: false)
        while true {
            do {
                _ = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws/v5/public", configuration: configuration, logger: logger) {
                    inbound,
                    outbound,
                    _ in
                    try await outbound.write(.text(subscription))
                    var iterator = inbound.makeAsyncIterator()
                    var frames = 0
                    var start: (cpu: Double, time: ContinuousClock.Instant)?
                    while let message = try await iterator.nextMessage(maxSize: 1 << 24) {
                        // Trades only: the subscription acks are not part of the stream.
                        guard case .text(let text) = message, text.contains(#""data""#) else { continue }
                        frames += 1
                        if start == nil { start = (ClusterBenchmark.CPUTime.of(pid: getpid()), .now) }
                        if frames == total { break }
                    }
                    if let start, frames > 1 {
                        let cpu = ClusterBenchmark.CPUTime.of(pid: getpid()) - start.cpu
                        result.withLock {
                            $0 = FloorMeasurement(
                                name: "reading floor",
                                description:
                                    "the same stream from a second fake exchange, \(frames - 1) frames read by HummingbirdWSClient in this process and only counted",
                                count: frames - 1,
                                unit: "a frame",
                                cpuSeconds: cpu,
                                elapsed: (ContinuousClock.now - start.time).inSeconds
                            )
                        }
                    }
                }
                break
            } catch {
                // The exchange may not listen yet.
                guard result.withLock({ $0 == nil }) else { throw error }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        guard let measurement = result.withLock({ $0 }) else { throw BenchmarkError("the reading floor's exchange sent fewer than two trades") }
        return measurement
    }
}
