import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization

/// Brings the schema up to date while the server already runs: it listens, answers `/health`,
/// and its connectors spool what they receive even when the database is down at start (`/ready`
/// says 503 until this is done). Retries with backoff up to 5 s; stops on shutdown.
public final class DatabaseMigrator: Service, Sendable {
    let store: any SchemaMigrations
    let logger: Logger
    private let done = Atomic<Bool>(false)

    public init(store: any SchemaMigrations, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// True once every migration is applied.
    public var isDone: Bool { done.load(ordering: .acquiring) }

    public func run() async throws {
        var delay = Duration.milliseconds(100)
        var attempts = 0
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            attempts += 1
            do {
                try await untilGracefulShutdown { [store] in try await store.migrate() }
                done.store(true, ordering: .releasing)
                logger.info("database ready", metadata: ["attempts": "\(attempts)"])
                break
            } catch is CancellationError {
                break
            } catch {
                logger.warning(
                    "database not reachable; serving and spooling until it is",
                    metadata: ["error_type": "\(type(of: error))", "error": "\(error)", "retry_in_ms": "\(delay.inMilliseconds)"]
                )
                do {
                    try await cancelWhenGracefulShutdown { [delay] in try await Task.sleep(for: delay) }
                } catch {
                    break
                }
                delay = min(delay * 2, .seconds(5))
            }
        }
        try? await gracefulShutdown()
    }

    /// Waits until the schema is up to date; false when shutting down (or cancelled) first.
    public func waitUntilDone() async -> Bool {
        while !isDone {
            if Task.isShuttingDownGracefully || Task.isCancelled { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }
}

/// Until the schema is current, API routes answer 503 `DATABASE_UNAVAILABLE` (through
/// `ErrorMiddleware`) instead of reaching tables that may not exist yet.
struct SchemaReadyMiddleware<Context: RequestContext>: RouterMiddleware {
    let migrator: DatabaseMigrator

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard migrator.isDone else { throw StoreError.unavailable("the schema is not migrated yet (waiting for the database)") }
        return try await next(request, context)
    }
}
