import Foundation
import HummingbirdWSClient
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
/// `rate` over four instruments, and `clients` realtime clients in this process. Two phases:
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

    /// One realtime client: the row ids it received and each update's delay in milliseconds.
    final class Client: Sendable {
        struct Received {
            var ids: [Int64] = []
            var latenciesMs: [Double] = []
            var duplicates = 0
        }
        let received = Mutex(Received())
        let connected = Atomic<Bool>(false)
        let closed = Atomic<Bool>(false)
        let task = Mutex<Task<Void, Never>?>(nil)

        func start(port: Int, instrument: String?, logger: Logger) {
            let query = instrument.map { "?instrument=\($0)" } ?? ""
            let task = Task { [self] in
                defer { closed.store(true, ordering: .relaxed) }
                _ = try? await WebSocketClient.connect(
                    url: "ws://127.0.0.1:\(port)/api/realtime\(query)",
                    configuration: .init(maxFrameSize: 1 << 20),
                    logger: logger
                ) { inbound, _, _ in
                    for try await frame in inbound.messages(maxSize: 1 << 20) {
                        guard case .text(let text) = frame else { continue }
                        let now = Date().timeIntervalSince1970 * 1000
                        if text.hasPrefix(#"{"type":"data_update""#) {
                            // Two fields found by scanning, not parsing: the clients must not be the bottleneck.
                            let id = Self.field(text, "\"id\":").flatMap { Int64($0) }
                            let sent = Self.field(text, "\"exchange_timestamp\":\"").flatMap(Timestamp.parse)
                            self.received.withLock { received in
                                if let id { received.ids.append(id) }
                                if let sent { received.latenciesMs.append(now - sent.timeIntervalSince1970 * 1000) }
                            }
                        } else if text.hasPrefix(#"{"type":"connected""#) {
                            self.connected.store(true, ordering: .relaxed)
                        }
                    }
                }
            }
            self.task.withLock { $0 = task }
        }

        func stop() { task.withLock { $0?.cancel() } }

        func waitConnected() async throws {
            let deadline = ContinuousClock.now + .seconds(30)
            while !connected.load(ordering: .relaxed) {
                guard ContinuousClock.now < deadline else { throw BenchmarkError("a realtime client did not connect") }
                try await Task.sleep(for: .milliseconds(20))
            }
        }

        /// The text after `key` up to the next `"`, `,` or `}`.
        static func field(_ text: String, _ key: String) -> String? {
            guard let range = text.range(of: key) else { return nil }
            let rest = text[range.upperBound...]
            guard let end = rest.firstIndex(where: { $0 == "\"" || $0 == "," || $0 == "}" }) else { return nil }
            return String(rest[..<end])
        }
    }

    public func run(log: @escaping @Sendable (String) -> Void) async throws {
        var quiet = Logger(label: "tributary.bench")
        quiet.logLevel = .warning
        let logger = quiet
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
        log("phase       delivered/s  latency p50 / p99 / max    server CPU  complete clients")
        for filtered in [true, false] {
            let name = "fanout-\(filtered ? "filtered" : "all")-\(UUID().uuidString.prefix(6).lowercased())"
            let subscribed = (0..<clients).map { filtered ? Self.instruments[$0 % Self.instruments.count] : nil }
            let running = subscribed.map { _ in Client() }
            for (client, instrument) in zip(running, subscribed) { client.start(port: server.port, instrument: instrument, logger: logger) }
            defer { for client in running { client.stop() } }
            for client in running { try await client.waitConnected() }
            let body = JSONValue.object([
                "name": .string(name), "connector_type": "websocket", "exchange": "okx",
                "api_url": .string("ws://127.0.0.1:\(exchangePort)/ws/v5/public"),
                "subscription_message": .object([
                    "op": "subscribe", "args": .array(Self.instruments.map { .object(["channel": "trades", "instId": .string($0)]) }),
                ]),
            ])
            let cpuBefore = ClusterBenchmark.CPUTime.of(pid: server.child.pid)
            let started = ContinuousClock.now
            let id = try await api.createAndStart(body)
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            _ = try await api.send("POST", "/api/connectors/\(id)/stop", nil)
            let elapsed = (ContinuousClock.now - started).inSeconds
            let cpu = (ClusterBenchmark.CPUTime.of(pid: server.child.pid) - cpuBefore) / elapsed
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
                    format: "%-10@  %11.0f  %5.1f / %5.1f / %6.1f ms  %10.2f  %d of %d",
                    filtered ? "1 of 4" : "all",
                    Double(delivered) / elapsed,
                    percentile(0.5),
                    percentile(0.99),
                    latencies.last ?? .nan,
                    cpu,
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
