import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization
import Tributary
import TributarySimulator

#if canImport(Glibc)
import Glibc
#endif

/// `tributary bench fanout`: a `tributary serve` process, a `tributary simulate` process paced at
/// `rate` over four instruments, and `clients` realtime clients in this process
/// (`RawRealtimeClient`: channel handlers on NIO's event loops, so the load generator costs
/// little next to the server it measures). Two phases:
/// each client subscribed to one of the four instruments, then every client unfiltered. The
/// clients connect before the connector starts and the connector stops before the counting, so
/// every client must have received every stored row it subscribed to, once. Prints delivered
/// updates per second, exchange → client latency (p50/p99/max, millisecond timestamps) and the
/// server's CPU (from `/proc`).
public struct FanoutBenchmark: Sendable {
    public var config: AppConfig
    public var clients = 100
    public var rate = 2000.0
    public var seconds = 20.0

    public init(config: AppConfig) { self.config = config }

    static let instruments = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]

    public func run(log: @escaping @Sendable (String) -> Void) async throws {
        var quiet = Logger(label: "tributary.bench")
        quiet.logLevel = .warning
        let logger = quiet
        // Deliveries are checked by id, which an update sent ahead of its commit does not have.
        var config = self.config
        config.realtimeUnpersistedAfter = nil
        let processes = try await BenchProcesses(
            config: config,
            simulate: ["--rate", "\(rate)", "--instruments", Self.instruments.joined(separator: ",")],
            logger: logger
        )
        defer { processes.stop() }
        let (server, exchangePort, reading) = (processes.server, processes.exchangePort, processes.reading)
        let api = BenchHTTPClient(port: server.port)
        log(
            "fanout: \(clients) realtime clients, \(Int(rate)) msg/s over \(Self.instruments.count) instruments, \(seconds) s a phase (\(config.description))"
        )
        log("phase       delivered/s  latency p50 / p99 / max    server CPU  clients CPU  complete clients")
        for filtered in [true, false] {
            let name = "fanout-\(filtered ? "filtered" : "all")-\(UUID().uuidString.prefix(6).lowercased())"
            let subscribed = (0..<clients).map { filtered ? Self.instruments[$0 % Self.instruments.count] : nil }
            let running = subscribed.map { _ in RawRealtimeClient() }
            defer { for client in running { client.stop() } }
            for (client, instrument) in zip(running, subscribed) { try await client.connect(port: server.port, instrument: instrument) }
            for client in running { try await client.waitConnected() }
            let body = JSONValue.object([
                "name": .string(name), "connector_type": "websocket", "exchange": "okx",
                "api_url": .string("ws://127.0.0.1:\(exchangePort)/ws/v5/public"),
                "subscription_message": .object([
                    "op": "subscribe", "args": .array(Self.instruments.map { .object(["channel": "trades", "instId": .string($0)]) }),
                ]),
            ])
            let cpuBefore = ClusterBenchmark.CPUTime.of(pid: server.child.pid)
            let clientsCPUBefore = ClusterBenchmark.CPUTime.of(pid: getpid())
            let started = ContinuousClock.now
            let id = try await api.createAndStart(body)
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            _ = try await api.send("POST", "/api/connectors/\(id)/stop", nil)
            let elapsed = (ContinuousClock.now - started).inSeconds
            let cpu = (ClusterBenchmark.CPUTime.of(pid: server.child.pid) - cpuBefore) / elapsed
            // This process: the clients, and little else while the connector runs.
            let clientsCPU = (ClusterBenchmark.CPUTime.of(pid: getpid()) - clientsCPUBefore) / elapsed
            // Every stored row of this connector, by instrument, once the last writes are in;
            // then wait for the clients to have them all.
            var stored = try await Self.storedIDs(config: reading, connector: id, instruments: Self.instruments)
            while true {
                try await Task.sleep(for: .milliseconds(500))
                let again = try await Self.storedIDs(config: reading, connector: id, instruments: Self.instruments)
                if again == stored { break }
                stored = again
            }
            let expected = subscribed.map { instrument in instrument.map { stored[$0] ?? [] } ?? stored.values.flatMap { $0 } }
            let settle = ContinuousClock.now + .seconds(15)
            while ContinuousClock.now < settle,
                zip(running, expected).contains(where: { client, rows in client.received.withLock { $0.ids.count } < rows.count })
            {
                try await Task.sleep(for: .milliseconds(50))
            }
            var complete = 0
            var delivered = 0
            var latencies: [Double] = []
            for (client, rows) in zip(running, expected) {
                let received = client.received.withLock { $0 }
                delivered += received.ids.count
                latencies += received.latenciesMs
                if received.ids.count == rows.count, Set(received.ids) == Set(rows) { complete += 1 }
            }
            latencies.sort()
            func percentile(_ p: Double) -> Double {
                latencies.isEmpty ? .nan : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
            }
            log(
                String(
                    format: "%-10@  %11.0f  %5.1f / %5.1f / %6.1f ms  %10.2f  %11.2f  %d of %d",
                    filtered ? "1 of 4" : "all",
                    Double(delivered) / elapsed,
                    percentile(0.5),
                    percentile(0.99),
                    latencies.last ?? .nan,
                    cpu,
                    clientsCPU,
                    complete,
                    running.count
                )
            )
        }
    }

    /// The ids of the rows `connector` stored, by instrument (read with a store of its own).
    static func storedIDs(config: AppConfig, connector: String, instruments: [String]) async throws -> [String: [Int64]] {
        try await withStore(config, logger: Logger(label: "tributary.bench")) { store in
            var ids: [String: [Int64]] = [:]
            for instrument in instruments {
                var query = MessageQuery()
                query.connectorID = connector
                query.instrument = instrument
                query.limit = 1_000_000
                ids[instrument] = try await store.messages(query).map(\.id)
            }
            return ids
        }
    }
}
