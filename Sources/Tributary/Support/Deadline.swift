/// Runs `operation`, failing with `StoreError.unavailable` if it has not finished within `timeout`.
///
/// PostgresNIO waits for a connection for as long as its circuit breaker allows (about a minute) when
/// the database is down; the API must answer 503 within `DB_POOL_TIMEOUT` instead.
func withDeadline<Value: Sendable>(
    _ timeout: Duration,
    _ what: @autoclosure () -> String,
    _ operation: @escaping @Sendable () async throws -> Value
) async throws -> Value {
    let description = what()
    return try await withThrowingTaskGroup(of: Value.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw StoreError.unavailable("\(description) did not finish within \(timeout)")
        }
        defer { group.cancelAll() }
        // The first of the two tasks to finish decides; the group is never empty here.
        guard let value = try await group.next() else { throw StoreError.unavailable("\(description) was cancelled") }
        return value
    }
}
