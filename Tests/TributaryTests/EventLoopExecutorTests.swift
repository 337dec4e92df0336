import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import Tributary

/// The batch writer on its store's event loop (`EventLoopExecutor`), against real stores.
@Suite(.timeLimit(.minutes(2))) struct EventLoopExecutorTests {
    /// A store whose batch writes note whether they ran on the store's loop and when they began.
    final class WatchedSink: MessageSink {
        let store: any ConnectorStore
        let loop: any EventLoop
        /// Per `insertMessages` call: on the loop, and when.
        let calls = Mutex<[(onLoop: Bool, at: ContinuousClock.Instant, count: Int)]>([])

        init(store: any ConnectorStore, loop: any EventLoop) {
            self.store = store
            self.loop = loop
        }

        func insertMessages(_ messages: [PendingMessage], batch: BatchRecord) async throws -> [Int64?] {
            let call = (onLoop: loop.inEventLoop, at: ContinuousClock.now, count: messages.count)
            calls.withLock { $0.append(call) }
            return try await store.insertMessages(messages, batch: batch)
        }
        func storedIDs(ofBatch batchID: String, messages: [PendingMessage]) async throws -> [Int64?]? {
            try await store.storedIDs(ofBatch: batchID, messages: messages)
        }
        var concurrentBatchWrites: Int { store.concurrentBatchWrites }
        var eventLoop: (any EventLoop)? { loop }
        func insertAPIData(_ row: APIDataRow) async throws -> Int64 { try await store.insertAPIData(row) }
        func insertDeadLetters(_ letters: [DeadLetter]) async throws { try await store.insertDeadLetters(letters) }
        func pruneDeadLetters(keeping: Int) async throws { try await store.pruneDeadLetters(keeping: keeping) }
        func deleteRows(of table: RetainedTable, before cutoff: Date, limit: Int) async throws -> Int {
            try await store.deleteRows(of: table, before: cutoff, limit: limit)
        }
    }

    /// A lone message is written at once, the next one lingers `BATCH_LINGER_MS` on the loop's
    /// timer, and both writes run on the loop the store's calls complete on.
    @Test(arguments: TestBackend.enabled)
    func theWriterRunsOnItsStoresLoopAndLingersThere(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let loop = try #require(store.eventLoop, "both stores complete their calls on a loop")
                let sink = WatchedSink(store: store, loop: loop)
                let buffer = IngestBuffer(capacity: 1000)
                let linger = Duration.milliseconds(150)
                let writer = BatchWriter(
                    buffer: buffer,
                    store: sink,
                    broadcaster: Broadcaster(),
                    metrics: PipelineMetrics(),
                    linger: linger,
                    logger: Logger(label: "test")
                )
                let feeder = Task {
                    buffer.append(contentsOf: [HardeningTests.pending(0)])
                    while sink.calls.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(2)) }
                    buffer.append(contentsOf: [HardeningTests.pending(1), HardeningTests.pending(2)])
                }
                try await DurabilityTests.runWriter(writer) { try await store.messageCounts(connectorID: "conn_bisect").rows == 3 }
                try await feeder.value
                let calls = sink.calls.withLock { $0 }
                #expect(calls.map(\.count) == [1, 2])
                #expect(calls.allSatisfy { $0.onLoop }, "every write ran on the store's loop")
                if calls.count == 2 {
                    // The first take came shortly before its write began, so the second waited
                    // about `linger` (at least half of it on a loaded machine; about 2 ms without it).
                    let waited = calls[1].at - calls[0].at
                    #expect(waited >= linger / 2, "the second batch began \(waited) after the first")
                }
            }
        }
    }

    /// A writer lingering for what connectors held until its promised start
    /// (`IngestBuffer.readsMayWaitUntil`) starts its write when the first of that arrives, not
    /// when its wait past the linger ends (`BatchWriter.defaultHeldReadsWait`; 3 s here).
    @Test(arguments: TestBackend.enabled)
    func whatArrivesAfterThePromisedStartEndsTheLinger(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let loop = try #require(store.eventLoop)
                let sink = WatchedSink(store: store, loop: loop)
                let buffer = IngestBuffer(capacity: 1000)
                let writer = BatchWriter(
                    buffer: buffer,
                    store: sink,
                    broadcaster: Broadcaster(),
                    metrics: PipelineMetrics(),
                    linger: .milliseconds(300),
                    heldReadsWait: .seconds(3),
                    logger: Logger(label: "test")
                )
                let feeder = Task {
                    buffer.append(contentsOf: [HardeningTests.pending(0)])
                    while sink.calls.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(2)) }
                    // Before the promised start: the writer takes it and lingers.
                    buffer.append(contentsOf: [HardeningTests.pending(1)])
                    while DispatchTime.now().uptimeNanoseconds < buffer.readsMayWaitUntil { try await Task.sleep(for: .milliseconds(2)) }
                    let held = ContinuousClock.now
                    buffer.append(contentsOf: [HardeningTests.pending(2)])
                    return held
                }
                try await DurabilityTests.runWriter(writer) { try await store.messageCounts(connectorID: "conn_bisect").rows == 3 }
                let held = try await feeder.value
                let calls = sink.calls.withLock { $0 }
                #expect(calls.map(\.count) == [1, 2], "the lingering batch took the held message")
                if calls.count == 2 {
                    let waited = calls[1].at - held
                    #expect(waited < .seconds(1), "the write began \(waited) after the held message arrived")
                }
            }
        }
    }

    /// After a small batch connectors may hold their reads until the linger's end; after a batch
    /// of `BatchWriter.lingerBelow` or more (a rate at which nothing lingers) they may not.
    @Test func readsAreHeldAfterSmallBatchesOnly() async throws {
        try await TestBackend.sqlite.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let buffer = IngestBuffer(capacity: 1000)
                let writer = BatchWriter(
                    buffer: buffer,
                    store: store,
                    broadcaster: Broadcaster(),
                    metrics: PipelineMetrics(),
                    linger: .seconds(5),
                    logger: Logger(label: "test")
                )
                buffer.append(contentsOf: (0..<300).map { HardeningTests.pending($0) })
                try await DurabilityTests.runWriter(writer) { try await store.messageCounts(connectorID: "conn_bisect").rows == 300 }
                #expect(buffer.readsMayWaitUntil == 0, "no hold after a batch of 300")
                buffer.append(contentsOf: (300..<303).map { HardeningTests.pending($0) })
                try await DurabilityTests.runWriter(writer) { try await store.messageCounts(connectorID: "conn_bisect").rows == 303 }
                #expect(buffer.readsMayWaitUntil > DispatchTime.now().uptimeNanoseconds, "a hold until the linger's end after a batch of 3")
            }
        }
    }

    @Test func aSleepOnTheLoopEndsAtItsDeadlineOrWhenCancelled() async throws {
        let executor = EventLoopExecutor(MultiThreadedEventLoopGroup.singleton.next())
        let start = ContinuousClock.now
        await executor.sleep(until: start + .milliseconds(60))
        #expect(ContinuousClock.now - start >= .milliseconds(60))

        let long = Task { await executor.sleep(until: .now + .seconds(30)) }
        try await Task.sleep(for: .milliseconds(20))
        let cancelledAt = ContinuousClock.now
        long.cancel()
        await long.value
        #expect(ContinuousClock.now - cancelledAt < .seconds(5), "a cancelled sleep ends at once")

        // Woken through `wakeable`.
        let wake = Mutex<(@Sendable () -> Void)?>(nil)
        let woken = Task { await executor.sleep(until: .now + .seconds(30)) { end in wake.withLock { $0 = end } } }
        while wake.withLock({ $0 == nil }) { try await Task.sleep(for: .milliseconds(2)) }
        let wokenAt = ContinuousClock.now
        wake.withLock { $0 }?()
        await woken.value
        #expect(ContinuousClock.now - wokenAt < .seconds(5), "a woken sleep ends at once")

        // Cancelled before it begins: it does not wait at all.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await executor.sleep(until: .now + .seconds(30))
        }
        let before = ContinuousClock.now
        await early.value
        #expect(ContinuousClock.now - before < .seconds(5))
    }
}
