import NIOCore

/// Runs a task's jobs on one NIO event loop (a task executor preference). A task that reads a
/// channel of that loop then resumes on the loop's own thread when a frame arrives, instead of
/// waking a thread of Swift's cooperative pool for each frame.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
