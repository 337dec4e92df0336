import Foundation
import Logging
import PostgresNIO
import Synchronization
import Tributary

#if canImport(Glibc)
import Glibc
#endif

/// `tributary bench ingest --rate R`: what Tributary costs at a steady rate, the way it runs in
/// production. A `tributary serve` process, a `tributary simulate` process paced at `rate` that
/// sends exactly `rate × seconds` trades, and one realtime client in this process. Prints the
/// server's CPU (from `/proc`: cores, and µs per message), exchange → client latency, the
/// missing and duplicate rows; then the floors: what reading the same stream costs by itself
/// (`ReadFloor`) and, on SQLite, what SQLite spends on the same transactions (`SQLiteFloor`).
public struct RateBenchmark: Sendable {
    public var config: AppConfig
    public var rate = 1000.0
    public var seconds = 15.0

    public init(config: AppConfig) { self.config = config }

    public func run(log: @escaping @Sendable (String) -> Void) async throws {
        var quiet = Logger(label: "tributary.bench")
        quiet.logLevel = .warning
        let logger = quiet
        let total = Int(rate * seconds)
        let instruments = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]
        let processes = try await BenchProcesses(
            config: config,
            simulate: ["--rate", "\(rate)", "--total", "\(total)", "--trades-per-frame", "1", "--instruments", instruments.joined(separator: ",")],
            logger: logger
        )
        defer { processes.stop() }
        let (server, exchangePort, reading) = (processes.server, processes.exchangePort, processes.reading)

        let client = RawRealtimeClient()
        defer { client.stop() }
        try await client.connect(port: server.port, instrument: nil)
        try await client.waitConnected()
        let body = JSONValue.object([
            // A name of its own each run: a database an earlier run used still has its connector.
            "name": .string("bench-rate-\(UUID().uuidString.prefix(8).lowercased())"), "connector_type": "websocket", "exchange": "okx",
            "api_url": .string("ws://127.0.0.1:\(exchangePort)/ws/v5/public"),
            "subscription_message": .object([
                "op": "subscribe", "args": .array(instruments.map { .object(["channel": "trades", "instId": .string($0)]) }),
            ]),
        ])
        let probe = StallProbe()
        defer { probe.stop() }
        let cpuBefore = ClusterBenchmark.CPUTime.of(pid: server.child.pid)
        let started = ContinuousClock.now
        let id = try await BenchHTTPClient(port: server.port).createAndStart(body)
        let end = ContinuousClock.now + .seconds(seconds + 20)
        // Counted by exchange time, not id: an update sent ahead of its commit has none.
        while client.received.withLock({ $0.sentMs.count }) < total, ContinuousClock.now < end {
            try await Task.sleep(for: .milliseconds(20))
        }
        if config.realtimeUnpersistedAfter != nil {
            // Then the last commit, which may follow its update (`REALTIME_UNPERSISTED_AFTER_MS`).
            while try await BenchHTTPClient(port: server.port).storedMessages(id) < total, ContinuousClock.now < end {
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        let elapsed = (ContinuousClock.now - started).inSeconds
        let cpu = ClusterBenchmark.CPUTime.of(pid: server.child.pid) - cpuBefore
        let under50ms = #"tributary_batch_flush_duration_seconds_bucket{le="0.05"}"#
        let under250ms = #"tributary_batch_flush_duration_seconds_bucket{le="0.25"}"#
        let metrics = try? await BenchHTTPClient(port: server.port).metrics(["tributary_batch_flush_size_count", under50ms, under250ms])
        let batches = metrics?["tributary_batch_flush_size_count"]
        let writesUnder50ms = metrics?[under50ms]
        let writesUnder250ms = metrics?[under250ms]
        let received = client.received.withLock { $0 }
        let counts = try await withStore(reading, logger: logger) { store in try await store.messageCounts(connectorID: id) }
        let latencies = received.latenciesMs.sorted()
        func percentile(_ p: Double) -> Double { latencies.isEmpty ? .nan : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        log("bench ingest --rate \(Int(rate)) for \(seconds) s (\(total) messages, one realtime client; \(config.description))")
        log(
            String(
                format: "server CPU: %.2f s over %.1f s = %.3f cores, %.0f µs per message",
                cpu,
                elapsed,
                cpu / elapsed,
                cpu / Double(max(1, counts.rows)) * 1_000_000
            )
        )
        log(
            String(
                format: "latency (exchange send → realtime client receive): p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d updates",
                percentile(0.5),
                percentile(0.99),
                latencies.last ?? .nan,
                latencies.count
            )
        )
        log(IngestBenchmark.slowSpells(sentMs: received.sentMs, latenciesMs: received.latenciesMs))
        log(probe.summary(since: received.sentMs.min() ?? 0))
        if let batches, batches > 0 {
            log(String(format: "batches: %.0f written, %.1f messages each on average", batches, Double(counts.rows) / batches))
            // A slow write holds up every update behind it: these match slow spells to the database.
            if let writesUnder50ms, let writesUnder250ms {
                log(
                    String(
                        format: "batch writes (start to commit) over 50 ms: %.0f, over 250 ms: %.0f",
                        batches - writesUnder50ms,
                        batches - writesUnder250ms
                    )
                )
            }
        }
        log(
            "rows: \(counts.rows) stored of \(total) sent, \(total - counts.distinctSources) missing, \(counts.rows - counts.distinctSources) duplicates"
        )
        // The floors: what reading the stream, and on SQLite storing its rows, cost by themselves.
        client.stop()
        probe.stop()
        var floors: [(name: String, measure: () async throws -> FloorMeasurement)] = []
        if case .sqlite(let path) = reading.database {
            floors.append(
                (
                    "storage floor",
                    {
                        try await SQLiteFloor.measure(
                            source: path,
                            connectorID: id,
                            scratch: config.dataDirectory + "/floor",
                            over: seconds,
                            logger: logger
                        )
                    }
                )
            )
        }
        floors.append(
            (
                "reading floor",
                {
                    try await ReadFloor.measure(
                        rate: rate,
                        seconds: seconds,
                        instruments: instruments,
                        linger: config.batchLinger,
                        directory: config.dataDirectory,
                        logger: logger
                    )
                }
            )
        )
        var sum = 0.0
        for floor in floors {
            do {
                let measured = try await floor.measure()
                sum += measured.cores
                log(measured.summary)
            } catch {
                log("\(floor.name): not measured (\(error))")
            }
        }
        if sum > 0 {
            log(String(format: "the server used %.3f cores: %.1f× the floors together (%.3f cores)", cpu / elapsed, cpu / elapsed / sum, sum))
        }
    }
}
