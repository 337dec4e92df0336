import Foundation
import Logging
import Tributary

#if canImport(Glibc)
import Glibc
#endif

/// A `tributary simulate` process and a `tributary serve` process on 127.0.0.1, for the benches
/// that measure the server as it runs in production (its CPU from `/proc`). `stop()` ends both.
struct BenchProcesses {
    let exchange: ClusterBenchmark.Child
    let exchangePort: Int
    let server: ClusterBenchmark.Instance
    /// Where this process reads what the server stored (its own SQLite file, or PostgreSQL).
    let reading: AppConfig

    /// `simulate` gets `--port` and then `arguments`.
    init(config: AppConfig, simulate arguments: [String], logger: Logger) async throws {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let directory = config.dataDirectory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var postgres: PostgresSettings?
        if case .postgres(let settings) = config.database { postgres = settings }
        exchangePort = ClusterBenchmark.Instance.freePort()
        exchange = try ClusterBenchmark.Child(
            executable: executable,
            arguments: ["simulate", "--port", "\(exchangePort)"] + arguments,
            environment: ["PATH=/usr/bin:/bin"],
            log: directory + "/exchange.log"
        )
        do {
            server = try ClusterBenchmark.Instance(
                executable: executable,
                database: postgres,
                key: config.encryptionKey ?? EncryptionKey.generate(),
                directory: directory + "/server",
                // The settings measured by `BATCH_LINGER_MS=… bench ingest --rate` (and the like).
                settings: ["BATCH_LINGER_MS=\(config.batchLinger.inMilliseconds)"]
                    + (config.realtimeUnpersistedAfter.map { ["REALTIME_UNPERSISTED_AFTER_MS=\($0.inMilliseconds)"] } ?? []),
                logger: logger
            )
        } catch {
            exchange.stop(signal: SIGKILL)
            throw error
        }
        var reading = config
        if postgres == nil { reading.database = .sqlite(path: server.directory + "/tributary.sqlite") }
        self.reading = reading
        do {
            try await server.waitUntilReady()
        } catch {
            stop()
            throw error
        }
    }

    func stop() {
        server.stop(signal: SIGTERM)
        exchange.stop(signal: SIGKILL)
    }
}
