import ServiceLifecycle
import Synchronization

/// Runs `operation`, failing with `StoreError.timedOut` if it has not finished within `timeout`.
///
/// PostgresNIO waits for a connection for as long as its circuit breaker allows (about a minute) when
/// the database is down; the API must answer 503 within `DB_POOL_TIMEOUT` instead.
///
/// The deadline holds even when `operation` ignores cancellation: it runs in a task of its own,
/// which is cancelled and let go at the deadline, instead of in a task group, which would wait
/// for it. (A database call caught by a server shutting down has been seen to hang for good; in a
/// group it took the batch writer, and with it all ingest, along.) A write let go this way may
/// still commit later; the batch writer's retry finds that out by its `batch_id`.
func withDeadline<Value: Sendable>(
    _ timeout: Duration,
    _ what: @autoclosure () -> String,
    _ operation: @escaping @Sendable () async throws -> Value
) async throws -> Value {
    let description = what()
    let race = DeadlineRace<Value>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { continuation in
            race.waiter.withLock { $0 = continuation }
            // Registered before the work starts, so the work's end always finds it to remove.
            let deadline = DeadlineWatch.shared.add(at: .now + timeout) {
                if race.finish(.failure(StoreError.timedOut("\(description) did not finish within \(timeout)"))) {
                    race.tasks.withLock { $0.work }?.cancel()
                }
            }
            let work = Task(executorPreference: EventLoopExecutor.preferred) {
                let result: Result<Value, any Error>
                do { result = .success(try await operation()) } catch { result = .failure(error) }
                if race.finish(result) { DeadlineWatch.shared.remove(deadline) }
            }
            race.tasks.withLock { $0 = (work, deadline) }
        }
    } onCancel: {
        // The deadline stays: if the operation ignores cancellation, it still ends the wait.
        race.tasks.withLock { $0.work }?.cancel()
    }
}

/// Runs `operation`, but stops waiting for it once the server shuts down gracefully: then it is
/// cancelled and let go (as at a deadline), and this throws `CancellationError`. For calls that
/// may wait a long time on an absent database (a migration, which has no short deadline) and must
/// not hold up a shutdown: PostgresNIO's pool has been seen to keep one waiting a minute.
func untilGracefulShutdown<Value: Sendable>(_ operation: @escaping @Sendable () async throws -> Value) async throws -> Value {
    let race = DeadlineRace<Value>()
    return try await withGracefulShutdownHandler {
        try await withCheckedThrowingContinuation { continuation in
            race.waiter.withLock { $0 = continuation }
            let work = Task {
                let result: Result<Value, any Error>
                do { result = .success(try await operation()) } catch { result = .failure(error) }
                _ = race.finish(result)
            }
            race.tasks.withLock { $0 = (work, nil) }
            // A shutdown that began before the waiter was set has nobody else to end the wait.
            if Task.isShuttingDownGracefully, race.finish(.failure(CancellationError())) { work.cancel() }
        }
    } onGracefulShutdown: {
        if race.finish(.failure(CancellationError())) { race.tasks.withLock { $0.work }?.cancel() }
    }
}

/// Every `withDeadline` deadline, watched by one task that looks every `resolution` (and is not
/// running while none is set), instead of a timer each: a timer armed and cancelled per database
/// call woke Dispatch's timer thread twice per call, a measurable cost at hundreds of calls a
/// second. A deadline fires up to `resolution` late.
final class DeadlineWatch: Sendable {
    static let shared = DeadlineWatch(resolution: .milliseconds(50))

    struct State {
        var next = 0
        var deadlines: [Int: (at: ContinuousClock.Instant, fire: @Sendable () -> Void)] = [:]
        var watching = false
    }

    let resolution: Duration
    private let state = Mutex(State())

    init(resolution: Duration) { self.resolution = resolution }

    /// Calls `fire` once `at` has passed, unless removed first; returns the id to remove it by.
    func add(at: ContinuousClock.Instant, fire: @escaping @Sendable () -> Void) -> Int {
        let (id, start) = state.withLock { state in
            state.next += 1
            state.deadlines[state.next] = (at, fire)
            defer { state.watching = true }
            return (state.next, !state.watching)
        }
        if start { Task { await self.watch() } }
        return id
    }

    func remove(_ id: Int) { _ = state.withLock { $0.deadlines.removeValue(forKey: id) } }

    var count: Int { state.withLock { $0.deadlines.count } }

    /// Fires what is due every `resolution`; ends when no deadline is left.
    private func watch() async {
        while true {
            try? await Task.sleep(for: resolution)
            let now = ContinuousClock.now
            let (due, done) = state.withLock { state in
                let due = state.deadlines.filter { $0.value.at <= now }
                for id in due.keys { state.deadlines.removeValue(forKey: id) }
                if state.deadlines.isEmpty { state.watching = false }
                return (due.values.map(\.fire), state.deadlines.isEmpty)
            }
            for fire in due { fire() }
            if done { return }
        }
    }
}

/// The state an operation and its deadline race over: the caller's continuation, resumed once.
final class DeadlineRace<Value: Sendable>: Sendable {
    let waiter = Mutex<CheckedContinuation<Value, any Error>?>(nil)
    let tasks = Mutex<(work: Task<Void, Never>?, deadline: Int?)>((nil, nil))

    /// Resumes the caller with `result` unless it was resumed already; true if this call did.
    func finish(_ result: Result<Value, any Error>) -> Bool {
        let continuation = waiter.withLock { waiter in
            let continuation = waiter
            waiter = nil
            return continuation
        }
        continuation?.resume(with: result)
        return continuation != nil
    }
}
