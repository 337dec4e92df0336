import Logging
import ServiceLifecycle

/// Folds candle minutes staged by concurrent batches into `candles_1m` every `interval` (see
/// `PostgresStore+candles`). Queries read the staged minutes too, so this only keeps the staging
/// table small; a failure is logged once per streak and retried on the next tick.
public struct CandleCompactor: Service {
    let store: any CandleStore & SchemaMigrations
    let interval: Duration
    let logger: Logger

    public init(store: any CandleStore & SchemaMigrations, interval: Duration = .seconds(1), logger: Logger) {
        self.store = store
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        var failing = false
        var ready = false
        while !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown { [interval] in try await Task.sleep(for: interval) }
            } catch {
                break
            }
            do {
                // Services start before the migration runs: wait for the schema.
                if !ready {
                    try await store.checkReady()
                    ready = true
                }
                let folded = try await store.compactCandles()
                if failing { logger.info("candle compaction works again", metadata: ["folded": "\(folded)"]) }
                failing = false
            } catch {
                // Before the schema is ready there is nothing to report.
                guard ready else { continue }
                if !failing { logger.warning("candle compaction failed; retrying", metadata: ["error": "\(error)"]) }
                failing = true
            }
        }
        // A last fold so a clean shutdown leaves nothing staged.
        if ready { _ = try? await store.compactCandles() }
    }
}
