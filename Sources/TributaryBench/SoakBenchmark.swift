import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import Tributary
import TributarySimulator

#if canImport(Glibc)
import Glibc
#endif

/// `tributary bench soak`: the fake exchange streams at a steady rate into one OKX connector for
/// a long run while the database is restarted now and then (a shell command the caller gives);
/// prints resident memory, open file descriptors and the spool's bytes on disk over time, then
/// what was sent against what was stored. Everything runs in this one process.
public struct SoakBenchmark: Sendable {
    public var config: AppConfig
    public var duration: Duration = .seconds(600)
    public var rate: Double = 5000
    public var restartEvery: Duration = .seconds(120)
    /// Run with `/bin/sh -c` every `restartEvery` (e.g. `pg_ctl -D … restart -m fast`); nil: none.
    public var restartCommand: String?
    public var sampleEvery: Duration = .seconds(10)

    public init(config: AppConfig) {
        var config = config
        // The fake exchange listens on loopback.
        config.runtime.outbound.allowed += [CIDR("127.0.0.1/32")].compactMap { $0 }
        self.config = config
    }

    public func run(log: @escaping @Sendable (String) -> Void) async throws {
        var quiet = Logger(label: "tributary.soak")
        quiet.logLevel = .warning
        let logger = quiet
        var options = SimulatorOptions()
        options.rate = rate
        options.instruments = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]
        let instruments = options.instruments
        let exchange = FakeExchange(options: options, logger: logger)
        let config = self.config
        let spoolDirectory = (config.dataDirectory as NSString).appendingPathComponent("spool")
        try await exchange.withRunning { exchangePort in
            let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
            let app = try await buildApplication(config, logger: logger) { port in portContinuation.yield(port) }
            let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                var iterator = ports.makeAsyncIterator()
                guard let port = await iterator.next() else { throw CancellationError() }
                let client = BenchHTTPClient(port: port)
                let body = JSONValue.object([
                    "name": .string("soak-\(UUID().uuidString.prefix(8).lowercased())"), "connector_type": "websocket", "exchange": "okx",
                    "api_url": .string("ws://127.0.0.1:\(exchangePort)/ws/v5/public"),
                    "subscription_message": .object([
                        "op": "subscribe", "args": .array(instruments.map { .object(["channel": "trades", "instId": .string($0)]) }),
                    ]),
                ])
                let id = try await client.createAndStart(body)
                log("time_s  sent      stored    rss_mb  fds  spool_bytes  event")
                let started = ContinuousClock.now
                var nextRestart = started + restartEvery
                var nextSample = started
                var restarts = 0
                while ContinuousClock.now - started < duration {
                    var event = ""
                    if let restartCommand, ContinuousClock.now >= nextRestart {
                        restarts += 1
                        // On a thread pool: a cooperative thread must not block for the restart.
                        let status = (try? await NIOThreadPool.singleton.runIfActive { Self.shell(restartCommand) }) ?? -1
                        event = "database restarted (exit \(status))"
                        nextRestart += restartEvery
                    }
                    if ContinuousClock.now >= nextSample || !event.isEmpty {
                        let stored = (try? await Self.stored(client, id)) ?? -1
                        log(Self.sample(started: started, sent: exchange.sentCount, stored: stored, spool: spoolDirectory, event: event))
                        if ContinuousClock.now >= nextSample { nextSample += sampleEvery }
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
                // The stream goes on: wait until as many trades are stored as were sent in the soak.
                let sent = exchange.sentCount
                let ended = ContinuousClock.now
                var stored = -1
                while ContinuousClock.now - ended < .seconds(120) {
                    stored = (try? await Self.stored(client, id)) ?? -1
                    if stored >= sent { break }
                    try await Task.sleep(for: .milliseconds(200))
                }
                let caughtUp = (ContinuousClock.now - ended).inSeconds
                _ = try? await client.send("POST", "/api/connectors/\(id)/stop", nil)
                log(Self.sample(started: started, sent: exchange.sentCount, stored: stored, spool: spoolDirectory, event: "stopped"))
                let integrity = try await client.integrity(id, config: config)
                log(
                    String(
                        format: "soak: %d database restarts; %d trades sent in %.0f s, as many stored %.1f s later%@; %d rows, %d duplicate",
                        restarts,
                        sent,
                        duration.inSeconds,
                        caughtUp,
                        stored >= sent ? "" : " (NOT caught up within 120 s)",
                        integrity.stored,
                        integrity.stored - integrity.distinct
                    )
                )
                await group.triggerGracefulShutdown()
            }
        }
    }

    static func stored(_ client: BenchHTTPClient, _ id: String) async throws -> Int {
        let status = try await client.send("GET", "/api/connectors/\(id)", nil)
        guard case .number(let text) = status["data"]?["performance_metrics"]?["messages_stored"], let value = Int(text) else { return -1 }
        return value
    }

    static func sample(started: ContinuousClock.Instant, sent: Int, stored: Int, spool: String, event: String) -> String {
        let seconds = (ContinuousClock.now - started).inSeconds
        return String(
            format: "%6.0f  %-8d  %-8d  %6d  %3d  %11d  %@",
            seconds,
            sent,
            stored,
            residentMemoryMB(),
            openFileDescriptors(),
            directoryBytes(spool),
            event
        )
    }

    static func residentMemoryMB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return -1 }
        return kilobytes / 1024
    }

    static func openFileDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    static func directoryBytes(_ path: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.reduce(0) { total, name in
            let size = (try? FileManager.default.attributesOfItem(atPath: (path as NSString).appendingPathComponent(name))[.size] as? Int) ?? 0
            return total + size
        }
    }

    /// Runs `command` with `/bin/sh -c` and waits for it (posix_spawn and waitpid: Foundation's
    /// `Process` was seen never to notice its child's exit here).
    static func shell(_ command: String) -> Int32 {
        var pid: pid_t = 0
        let arguments = ["/bin/sh", "-c", command]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        guard posix_spawn(&pid, "/bin/sh", nil, nil, &argv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { return -1 }
        }
        return (status >> 8) & 0xFF
    }
}
