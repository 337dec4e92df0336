import ServiceLifecycle

/// Sleeps for `duration`, the wait of a service's periodic loop. False when a graceful shutdown
/// (or a cancellation) ended it first: the loop should stop.
func sleepUnlessShuttingDown(for duration: Duration) async -> Bool {
    do {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: duration) }
        return true
    } catch {
        return false
    }
}
