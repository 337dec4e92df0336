import Foundation
import HummingbirdWSClient
import Logging
import ServiceLifecycle
import Synchronization
import Tributary
import TributarySimulator

#if canImport(Glibc)
import Glibc
#endif

/// `tributary bench ingest`: fake exchange → OKX connector → pipeline → database → one realtime
/// client, all through real sockets on 127.0.0.1, with the server built exactly as `serve` builds it.
public struct IngestBenchmark: Sendable {
    public var config: AppConfig
    public var messages = 200_000
    public var tradesPerFrame = 10
    public var latencyRate = 2000.0
    public var latencySeconds = 10.0

    public init(config: AppConfig) {
        var config = config
        // The benchmark's fake exchange listens on loopback.
        config.runtime.outbound.allowed += [CIDR("127.0.0.1/32")].compactMap { $0 }
        self.config = config
    }

    /// Counts realtime updates and records the exchange-send → client-receive delay of each.
    final class Receiver: Sendable {
        let state = Mutex<(count: Int, latenciesMs: [Double], sentMs: [Double], unpersisted: Int)>((0, [], [], 0))
        /// Set when the server closed the realtime connection before every update arrived.
        let closed = Atomic<Bool>(false)

        func record(_ text: String, measure: Bool) {
            guard measure else {
                state.withLock { $0.count += 1 }
                return
            }
            let received = Date().timeIntervalSince1970 * 1000
            let data = (try? JSONValue.parse(text))?["data"]
            let sent = data?["exchange_timestamp"]?.stringValue.flatMap(Timestamp.parse)
            let unpersisted = data?["persisted"] == .bool(false)
            state.withLock { state in
                state.count += 1
                if unpersisted { state.unpersisted += 1 }
                if let sent {
                    state.latenciesMs.append(received - sent.timeIntervalSince1970 * 1000)
                    state.sentMs.append(sent.timeIntervalSince1970 * 1000)
                }
            }
        }

        var count: Int { state.withLock { $0.count } }
    }

    public func run(log: @Sendable (String) -> Void) async throws {
        var logger = Logger(label: "tributary.bench")
        logger.logLevel = .warning
        // PostgreSQL: the yardstick is a COPY of the rows this run writes, into the emptied table.
        var replay: ReplayCopy?
        if case .postgres(let settings) = config.database {
            replay = ReplayCopy(store: PostgresStore(settings: settings, poolMaximum: 1, timeout: .seconds(30), logger: logger), logger: logger)
        }
        try await withReplayStore(replay) { replay in
            try await replay?.store.migrate()
            let empty = try await replay?.rowCount() == 0
            let throughput = try await phase(rate: 0, total: messages, measureLatency: false, logger: logger)
            let rate = Double(messages) / throughput.seconds
            log(
                String(
                    format: "throughput: %d messages in %.2f s = %.0f messages/s end to end (committed and broadcast)",
                    messages,
                    throughput.seconds,
                    rate
                )
            )
            log("integrity: \(throughput.stored) rows stored, \(throughput.distinct) distinct source ids (expected \(messages))")
            log(
                String(
                    format: "CPU meanwhile: this process (server, fake exchange, realtime client) %.2f s = %.1f µs a message%@",
                    throughput.processCPU,
                    throughput.processCPU * 1_000_000 / Double(messages),
                    replay == nil ? "" : String(format: "; PostgreSQL %.2f s", throughput.postgresCPU)
                )
            )
            guard let replay else { return }
            if empty {
                let dump = config.dataDirectory + "/replay.copy"
                defer { try? FileManager.default.removeItem(atPath: dump) }
                let copied = try await replay.run(dumpingTo: dump)
                let copyRate = Double(copied.rows) / copied.seconds
                log(
                    String(
                        format:
                            "replay COPY of the same %d rows into the emptied table (indexes kept): %.2f s = %.0f rows/s, "
                            + "PostgreSQL CPU %.2f s; ingest / COPY = %.2f",
                        copied.rows,
                        copied.seconds,
                        copyRate,
                        copied.postgresCPU,
                        rate / copyRate
                    )
                )
            } else {
                log("replay COPY skipped: websocket_messages was not empty before the run (use an empty database for the yardstick)")
            }
            // The burst and the replay used up the WAL segments a fresh cluster had: the latency
            // run would create and zero-fill each new one (see `ReplayCopy.checkpoint`).
            let checkpointStarted = ContinuousClock.now
            do {
                try await replay.checkpoint()
                log(String(format: "CHECKPOINT before the latency run: %.2f s", (ContinuousClock.now - checkpointStarted).inSeconds))
            } catch {
                // A role without `pg_checkpoint` (or superuser) may not; the run goes on without it.
                log("CHECKPOINT before the latency run failed (the role may lack pg_checkpoint); the latency run starts without it")
            }
        }
        // The burst and the replay leave hundreds of megabytes of dirty pages. The kernel writes
        // them back 30 s later, and every commit's fsync waits behind that writeback (300 ms
        // stalls, seen as slow COMMITs in PostgreSQL's log): an artifact of this benchmark's
        // order, not of a steady stream, so the latency run starts with them written.
        let flushStarted = ContinuousClock.now
        sync()
        log(String(format: "page cache written back (sync) before the latency run: %.2f s", (ContinuousClock.now - flushStarted).inSeconds))
        let total = Int(latencyRate * latencySeconds)
        let probe = StallProbe()
        defer { probe.stop() }
        let latency = try await phase(rate: latencyRate, total: total, measureLatency: true, logger: logger)
        let sorted = latency.latenciesMs.sorted()
        func percentile(_ p: Double) -> Double { sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        log(
            String(
                format:
                    "latency at %.0f messages/s (exchange send → realtime client receive): p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms over %d messages; %d of them sent before their commit (%@)",
                latencyRate,
                percentile(0.5),
                percentile(0.99),
                percentile(0.999),
                sorted.last ?? .nan,
                sorted.count,
                latency.unpersisted,
                config.realtimeUnpersistedAfter.map { "REALTIME_UNPERSISTED_AFTER_MS=\($0.inMilliseconds)" } ?? "REALTIME_UNPERSISTED_AFTER_MS unset"
            )
        )
        log("integrity of the latency run: \(latency.stored) rows stored, \(latency.distinct) distinct source ids (expected \(total))")
        log(Self.slowSpells(sentMs: latency.sentMs, latenciesMs: latency.latenciesMs))
        log(probe.summary(since: latency.sentMs.min() ?? 0))
        log("peak memory (VmHWM): \(Self.peakMemoryMB()) MB")
    }

    /// Where the tail comes from: the spells in which updates took over `thresholdMs` (sent within
    /// 100 ms of each other), each with when it began (seconds into the run), how long it lasted,
    /// how many updates it held and the worst of them.
    static func slowSpells(sentMs: [Double], latenciesMs: [Double], thresholdMs: Double = 30) -> String {
        let samples = zip(sentMs, latenciesMs).sorted { $0.0 < $1.0 }
        guard let start = samples.first?.0 else { return "slow spells: no samples" }
        var spells: [(from: Double, to: Double, count: Int, worst: Double)] = []
        for (sent, latency) in samples where latency > thresholdMs {
            if let last = spells.last, sent - last.to <= 100 {
                spells[spells.count - 1] = (last.from, sent, last.count + 1, max(last.worst, latency))
            } else {
                spells.append((sent, sent, 1, latency))
            }
        }
        guard !spells.isEmpty else { return "slow spells: no update took over \(Int(thresholdMs)) ms" }
        let described = spells.sorted { $0.worst > $1.worst }.prefix(5).map {
            String(format: "at %.1f s for %.0f ms, %d updates, worst %.0f ms", ($0.from - start) / 1000, $0.to - $0.from, $0.count, $0.worst)
        }
        return "slow spells (updates over \(Int(thresholdMs)) ms): \(spells.count); worst: " + described.joined(separator: "; ")
    }

    /// Runs `body` with the replay's store running (if there is one).
    func withReplayStore<T: Sendable>(_ replay: ReplayCopy?, _ body: (ReplayCopy?) async throws -> T) async throws -> T {
        guard let replay else { return try await body(nil) }
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await replay.store.run() }
            defer { tasks.cancelAll() }
            return try await body(replay)
        }
    }

    struct PhaseResult {
        var seconds: Double
        var stored: Int
        var distinct: Int
        var latenciesMs: [Double]
        /// Updates that came before their commit, marked not persisted.
        var unpersisted: Int
        /// When each of `latenciesMs` was sent (ms since 1970), in the same order.
        var sentMs: [Double]
        /// CPU seconds while the messages went through: this process (the server, the fake
        /// exchange and the realtime client), and every PostgreSQL process on the machine.
        var processCPU: Double
        var postgresCPU: Double
    }

    func phase(rate: Double, total: Int, measureLatency: Bool, logger: Logger) async throws -> PhaseResult {
        var options = SimulatorOptions()
        options.rate = rate
        options.total = total
        options.tradesPerFrame = rate == 0 ? tradesPerFrame : 1
        options.instruments = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]
        let exchange = FakeExchange(options: options, logger: logger)
        let instruments = options.instruments
        let config = self.config
        return try await exchange.withRunning { exchangePort in
            let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
            let app = try await buildApplication(config, logger: logger) { port in portContinuation.yield(port) }
            let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
            return try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                var iterator = ports.makeAsyncIterator()
                guard let port = await iterator.next() else { throw CancellationError() }
                defer { Task { await group.triggerGracefulShutdown() } }
                let receiver = Receiver()
                let (connected, connectedContinuation) = AsyncStream.makeStream(of: Void.self)
                tasks.addTask {
                    defer { receiver.closed.store(true, ordering: .relaxed) }
                    try await WebSocketClient.connect(
                        url: "ws://127.0.0.1:\(port)/api/realtime",
                        configuration: .init(maxFrameSize: 1 << 20),
                        logger: logger
                    ) { inbound, _, _ in
                        for try await message in inbound.messages(maxSize: 1 << 20) {
                            guard case .text(let text) = message else { continue }
                            if text.hasPrefix(#"{"type":"connected""#) {
                                connectedContinuation.yield()
                                continue
                            }
                            guard text.hasPrefix(#"{"type":"data_update""#) else { continue }
                            receiver.record(text, measure: measureLatency)
                            if receiver.count >= total { return }
                        }
                    }
                }
                var waitConnected = connected.makeAsyncIterator()
                _ = await waitConnected.next()
                let name = "bench-\(UUID().uuidString.prefix(8).lowercased())"
                let body = JSONValue.object([
                    "name": .string(name), "connector_type": "websocket", "exchange": "okx",
                    "api_url": .string("ws://127.0.0.1:\(exchangePort)/ws/v5/public"),
                    "subscription_message": .object([
                        "op": "subscribe", "args": .array(instruments.map { .object(["channel": "trades", "instId": .string($0)]) }),
                    ]),
                ])
                let client = BenchHTTPClient(port: port)
                let id = try await client.createAndStart(body)
                let started = ContinuousClock.now
                let cpuBefore = (process: ClusterBenchmark.CPUTime.of(pid: getpid()), postgres: ClusterBenchmark.CPUTime.postgres())
                do {
                    var progress = (count: 0, at: ContinuousClock.now)
                    while receiver.count < total {
                        if receiver.closed.load(ordering: .relaxed) {
                            throw BenchmarkError("the server closed the realtime client after \(receiver.count) of \(total) updates")
                        }
                        if receiver.count != progress.count {
                            progress = (receiver.count, .now)
                        } else if ContinuousClock.now - progress.at > .seconds(10) {
                            throw BenchmarkError(
                                "the realtime client got \(receiver.count) of \(total) updates and nothing for 10 s: updates were dropped"
                            )
                        }
                        try await Task.sleep(for: .milliseconds(2))
                    }
                    // Updates sent ahead of their commit (`REALTIME_UNPERSISTED_AFTER_MS`): the
                    // run ends with the last commit, not with the last update.
                    if config.realtimeUnpersistedAfter != nil {
                        var stored = (count: 0, at: ContinuousClock.now)
                        while true {
                            let count = try await client.storedMessages(id)
                            if count >= total { break }
                            if count != stored.count {
                                stored = (count, .now)
                            } else if ContinuousClock.now - stored.at > .seconds(10) {
                                throw BenchmarkError("\(count) of \(total) messages stored and none for 10 s")
                            }
                            try await Task.sleep(for: .milliseconds(5))
                        }
                    }
                } catch {
                    // Leave nothing running: the connector would otherwise resume on the next start.
                    _ = try? await client.send("POST", "/api/connectors/\(id)/stop", nil)
                    throw error
                }
                let elapsed = ContinuousClock.now - started
                let seconds = elapsed.inSeconds
                let processCPU = ClusterBenchmark.CPUTime.of(pid: getpid()) - cpuBefore.process
                let postgresCPU = ClusterBenchmark.CPUTime.postgres() - cpuBefore.postgres
                _ = try await client.send("POST", "/api/connectors/\(id)/stop", nil)
                let integrity = try await client.integrity(id, config: config)
                await group.triggerGracefulShutdown()
                let (latenciesMs, sentMs, unpersisted) = receiver.state.withLock { ($0.latenciesMs, $0.sentMs, $0.unpersisted) }
                return PhaseResult(
                    seconds: seconds,
                    stored: integrity.stored,
                    distinct: integrity.distinct,
                    latenciesMs: latenciesMs,
                    unpersisted: unpersisted,
                    sentMs: sentMs,
                    processCPU: processCPU,
                    postgresCPU: postgresCPU
                )
            }
        }
    }

    static func peakMemoryMB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
            let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return -1 }
        return kilobytes / 1024
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
