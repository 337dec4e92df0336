import NIOCore
import Synchronization

/// Runs a task's jobs on one NIO event loop, as a task executor preference
/// (`withTaskExecutorPreference`): a task that waits mostly on channels of that loop (the batch
/// writer on its database connections) then resumes on the thread that completed its wait,
/// instead of waking one of Swift's cooperative threads for each step.
package final class EventLoopExecutor: TaskExecutor {
    package let eventLoop: any EventLoop

    package init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        eventLoop.execute { job.runSynchronously(on: executor) }
    }

    /// Waits until `deadline` on the loop's own timers (no other thread involved, unlike
    /// `Task.sleep`, whose timer Dispatch's manager thread keeps and which wakes two more threads
    /// when it fires); returns early when the task is cancelled, or when the closure given to
    /// `wakeable` (once the wait has begun) is called.
    package func sleep(until deadline: ContinuousClock.Instant, wakeable: ((@escaping @Sendable () -> Void) -> Void)? = nil) async {
        let left = ContinuousClock.now.duration(to: deadline)
        guard left > .zero, !Task.isCancelled else { return }
        let waiter = Mutex<(continuation: CheckedContinuation<Void, Never>?, timer: Scheduled<Void>?, cancelled: Bool)>((nil, nil, false))
        let resume: @Sendable () -> Void = {
            let continuation = waiter.withLock { state in
                defer { state.continuation = nil }
                return state.continuation
            }
            continuation?.resume()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                // Set before the timer exists, so a timer firing at once finds it.
                let cancelled = waiter.withLock { state in
                    state.continuation = continuation
                    return state.cancelled
                }
                guard !cancelled else { return resume() }
                let timer = eventLoop.scheduleTask(in: TimeAmount(left)) { resume() }
                let cancelledMeanwhile = waiter.withLock { state in
                    state.timer = timer
                    return state.cancelled
                }
                if cancelledMeanwhile { timer.cancel() }
                wakeable? {
                    waiter.withLock { $0.timer }?.cancel()
                    resume()
                }
            }
        } onCancel: {
            let timer = waiter.withLock { state in
                state.cancelled = true
                return state.timer
            }
            timer?.cancel()
            resume()
        }
    }

    /// The executor the current task prefers, when it set one with `prefer(_:_:)`: for the
    /// unstructured tasks it starts (`withDeadline`), which inherit task locals but not the preference.
    @TaskLocal package static var preferred: (any TaskExecutor)?

    /// Runs `body` preferring `executor` (nil: Swift's default), and lets the tasks it starts know.
    package static func prefer<Value: Sendable>(_ executor: (any TaskExecutor)?, _ body: () async throws -> Value) async rethrows -> Value {
        try await $preferred.withValue(executor) {
            try await withTaskExecutorPreference(executor, operation: body)
        }
    }
}
