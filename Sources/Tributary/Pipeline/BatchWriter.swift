import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Group commit: whenever a write slot is free the writer takes everything pending (up to
/// `maxBatch`) and writes it in one transaction, so latency stays low at low rates and batches
/// grow under load. A lone message goes at once; while messages stream in, a small batch lingers
/// until `linger` after the previous take, so at a steady few thousand messages a second there
/// is one transaction per `linger` instead of one per message or two. Stores that can (PostgreSQL) get several batches in flight at once; the
/// broadcaster still sees batches in the order they were taken. A failed write is retried with
/// backoff while new messages keep buffering; after commit the stored messages go to the
/// broadcaster with their database ids.
public final class BatchWriter: Service {
    let buffer: IngestBuffer
    let store: any MessageSink
    let broadcaster: Broadcaster
    let metrics: PipelineMetrics
    /// The most messages in one batch (`BATCH_MAX_MESSAGES`).
    let maxBatch: Int
    /// The longest a message waits for its write to start (`BATCH_MAX_INTERVAL_MS`): past it, a
    /// write starts even when every slot is busy (up to twice the slots).
    let maxWait: Duration
    /// While messages stream in, a small batch waits until this long after the previous take
    /// (`BATCH_LINGER_MS`), so a steady trickle shares a transaction instead of paying one each.
    let linger: Duration
    /// See `defaultHeldReadsWait`.
    let heldReadsWait: Duration
    let maxRetryDelay: Duration
    /// How long a write runs before its messages and those behind it get a spool copy
    /// (`SPOOL_SLOW_WRITE_MS`); nil unless the buffer spills (`SpoolMode.spill`).
    let slowWrite: Duration?
    /// How long a write runs before its messages, and those behind it, go to realtime clients
    /// without waiting for the commit, marked not persisted (`REALTIME_UNPERSISTED_AFTER_MS`),
    /// and the watch that tells, at most a quarter of that late; nil: only while the database is
    /// unavailable (and only with a buffer that `announcesEarly`).
    let realtimeWatch: (watch: DeadlineWatch, after: Duration)?
    let logger: Logger
    let publisher: OrderedPublisher
    /// The most messages a batch takes now (see `BatchSizeCap`).
    let sizeCap: Mutex<BatchSizeCap>
    /// Messages given up at shutdown with neither the database nor a spool copy.
    let unwritten = Atomic<Int>(0)
    /// Where refused messages go; nil keeps them only in the log and the counters.
    let deadLetters: DeadLetterQueue?
    /// Writes wait until it has brought the schema up to date; nil when the caller migrated.
    let migrator: DatabaseMigrator?
    /// Where the writer and its writes run: the store's event loop (`MessageSink.eventLoop`;
    /// nil: Swift's pool). See `EventLoopExecutor`.
    let executor: EventLoopExecutor?

    public init(
        buffer: IngestBuffer,
        store: any MessageSink,
        broadcaster: Broadcaster,
        metrics: PipelineMetrics,
        maxBatch: Int = 10_000,
        maxWait: Duration = .seconds(5),
        linger: Duration = .zero,
        heldReadsWait: Duration = BatchWriter.defaultHeldReadsWait,
        maxRetryDelay: Duration = .seconds(5),
        slowWrite: Duration = .milliseconds(200),
        unpersistedAfter: Duration? = nil,
        deadLetters: DeadLetterQueue? = nil,
        migrator: DatabaseMigrator? = nil,
        logger: Logger
    ) {
        self.executor = store.eventLoop.map(EventLoopExecutor.init)
        self.deadLetters = deadLetters
        self.migrator = migrator
        self.buffer = buffer
        self.store = store
        self.broadcaster = broadcaster
        self.metrics = metrics
        self.maxBatch = maxBatch
        self.maxWait = maxWait
        self.linger = linger
        self.heldReadsWait = heldReadsWait
        self.maxRetryDelay = maxRetryDelay
        self.slowWrite = buffer.mode == .spill ? slowWrite : nil
        self.realtimeWatch = (buffer.announcesEarly ? unpersistedAfter : nil).map { after in
            (DeadlineWatch(resolution: min(max(after / 4, .milliseconds(1)), .milliseconds(50))), after)
        }
        self.logger = logger
        self.publisher = OrderedPublisher(broadcaster: broadcaster, buffer: buffer)
        self.sizeCap = Mutex(BatchSizeCap(maximum: maxBatch))
    }

    /// Batches this large go at once (the rate is high enough that lingering saves nothing).
    static let lingerBelow = 256

    /// How long past its linger a lingering writer waits at most: connectors hold their reads
    /// until the linger's end (`IngestBuffer.readsMayWaitUntil`), and what they then read, an
    /// event-loop turn later, should make this batch rather than wait a whole linger for the
    /// next. The first of it to arrive ends the wait (`IngestBuffer.wakeOnAppend`).
    public static let defaultHeldReadsWait = Duration.microseconds(500)

    public func run() async throws {
        await EventLoopExecutor.prefer(executor) { await writeUntilClosed() }
    }

    private func writeUntilClosed() async {
        let slots = max(1, store.concurrentBatchWrites)
        await withGracefulShutdownHandler {
            if let migrator, !migrator.isDone {
                // No database yet: what arrives meanwhile goes to the spool.
                buffer.setDatabaseAvailable(false)
                guard await migrator.waitUntilDone() else { return }
                buffer.setDatabaseAvailable(true)
            }
            await withTaskGroup(of: WriterEvent.self) { writes in
                var inFlight = 0
                var ticket = 0
                var ticking = false
                var lastTake: ContinuousClock.Instant?
                while true {
                    // Wait for a free slot, but no longer than until the oldest waiting message has
                    // waited `maxWait`: then one more write starts, up to twice the slots.
                    waiting: while inFlight >= slots {
                        if inFlight < slots * 2 {
                            // Checked again at least every 100 ms: a message may arrive meanwhile.
                            var left = maxWait
                            if let oldest = buffer.oldestWaiting {
                                left = maxWait - .milliseconds(Int64(Date().timeIntervalSince(oldest) * 1000))
                                if left <= .zero { break waiting }
                            }
                            if !ticking {
                                ticking = true
                                writes.addTask { [left] in
                                    try? await Task.sleep(for: min(left, .milliseconds(100)))
                                    return .tick
                                }
                            }
                        }
                        switch await writes.next() {
                        case .wrote: inFlight -= 1
                        case .tick: ticking = false
                        case nil: break waiting
                        }
                    }
                    // Shutting down without a database: what is left stays in the spool for the next start.
                    if Task.isShuttingDownGracefully, buffer.spool != nil, !buffer.databaseAvailable { break }
                    let limit = sizeCap.withLock { $0.messages }
                    var batch = await buffer.take(upTo: limit)
                    if batch.isEmpty { break }
                    if let lastTake, batch.count < Self.lingerBelow, ContinuousClock.now - lastTake < linger, !Task.isShuttingDownGracefully {
                        if let executor {
                            let readsFrom = buffer.readsMayWaitUntil
                            await executor.sleep(until: lastTake + linger + heldReadsWait) { [buffer] wake in
                                buffer.wakeOnAppend(from: readsFrom, wake)
                            }
                            buffer.stopWakingOnAppend()
                        } else {
                            try? await Task.sleep(until: lastTake + linger + heldReadsWait)
                        }
                        if let more = buffer.takeFromMemory(upTo: limit - batch.count) { batch.append(more) }
                    }
                    lastTake = .now
                    // The next small batch lingers until then: connectors can read what comes
                    // meanwhile in one go, at its start. Not after a large batch: at that rate
                    // nothing lingers, and held reads would only slow the stream down.
                    if linger > .zero, batch.count < Self.lingerBelow, !Task.isShuttingDownGracefully {
                        buffer.noWriteBefore(
                            uptimeNanoseconds: DispatchTime.now().uptimeNanoseconds &+ UInt64(clamping: linger.inMilliseconds) &* 1_000_000
                        )
                    } else {
                        buffer.noWriteBefore(uptimeNanoseconds: 0)
                    }
                    let current = ticket
                    ticket += 1
                    inFlight += 1
                    // A large batch (a high rate) is encoded on Swift's pool, where two can be at
                    // once, not on the writer's loop, which also carries the database's traffic.
                    let writeExecutor: (any TaskExecutor)? =
                        executor != nil && batch.count >= Self.lingerBelow ? globalConcurrentExecutor : executor
                    writes.addTask {
                        await EventLoopExecutor.prefer(writeExecutor) { await self.write(batch, ticket: current) }
                        return .wrote
                    }
                }
            }
        } onGracefulShutdown: {
            self.buffer.close()
        }
        if let spool = buffer.spool, !spool.closeIfDrained() {
            await spool.sync()
            logger.notice(
                "batch writer stopped; messages the database did not take are kept in the spool for the next start",
                metadata: ["records": "\(spool.snapshot.records)", "spool": "\(spool.directory)"]
            )
        } else if unwritten.load(ordering: .relaxed) > 0 {
            logger.error("batch writer stopped; messages were lost", metadata: ["messages": "\(unwritten.load(ordering: .relaxed))"])
        } else {
            logger.info("batch writer stopped; every accepted message was written")
        }
    }

    /// Writes one batch, hands what was stored to the broadcaster in ticket order, and releases
    /// its spool records, unless it was abandoned at shutdown (then they are replayed at start).
    /// A write running past `slowWrite` (in `SpoolMode.spill`) gives its messages, and those
    /// waiting behind it, a spool copy: what a crash can lose stays about that much of the stream.
    /// One running past `unpersistedAfter` sends them to realtime clients before its commit.
    func write(_ batch: IngestBatch, ticket: Int) async {
        let spill = SpillOnce(buffer: buffer, batch: batch.messages, unspooled: batch.unspooled)
        let watch = slowWrite.map { after in DeadlineWatch.shared.add(at: .now + after) { spill.writeIsSlow() } }
        let early = realtimeWatch.map { watch in EarlyOnce(publisher: publisher, watch: watch) }
        let stored = await commit(batch.messages, spill: spill)
        if let watch { DeadlineWatch.shared.remove(watch) }
        early?.finish()
        publisher.publish(stored, ticket: ticket, takes: batch.takes)
        if let holds = spill.finish(adding: batch.holds) { buffer.release(holds) }
    }

    /// Writes `batch`, retrying transient failures. When the database refuses the data itself
    /// (`StoreError.isPermanent`), retrying cannot help: the batch is split in halves and each
    /// written on its own, down to the single rows that are refused, which become dead letters.
    /// So a poisoned row costs about 2·log2(n) extra writes and never holds up the rows around it.
    func commit(_ batch: [PendingMessage], spill: SpillOnce) async -> [StoredMessage] {
        switch await attempt(batch, spill: spill) {
        case .stored(let stored): return stored
        case .abandoned: return []
        case .tooSlow:
            let middle = batch.count / 2
            return await commit(Array(batch[..<middle]), spill: spill) + commit(Array(batch[middle...]), spill: spill)
        case .refused(let error):
            guard batch.count > 1 else {
                guard let pending = batch.first else { return [] }
                metrics.counters(for: pending.connectorID).reject(Rejection(reason: "store_refused", detail: "\(error)"))
                deadLetters?.append([
                    DeadLetter(
                        connectorID: pending.connectorID,
                        sourceID: pending.sourceID,
                        sessionID: pending.sessionID,
                        stage: .store,
                        reason: "store_refused",
                        error: "\(error)",
                        raw: pending.data
                    )
                ])
                logger.warning(
                    "the database refused a message; kept as a dead letter",
                    metadata: ["connector_id": "\(pending.connectorID)", "source_id": "\(pending.sourceID)", "error": "\(error)"]
                )
                return []
            }
            let middle = batch.count / 2
            return await commit(Array(batch[..<middle]), spill: spill) + commit(Array(batch[middle...]), spill: spill)
        }
    }

    enum Attempt {
        case stored([StoredMessage])
        /// The database refused this batch's data: the same write would fail again.
        case refused(StoreError)
        /// Shutting down, and the database stayed unreachable past the shutdown deadline.
        case abandoned
        /// The write ran past its deadline although the database answered just before, and did
        /// not commit: it is written again in halves (a batch the database cannot finish in time
        /// would otherwise be retried for good).
        case tooSlow
    }

    /// Writes one batch in one transaction, retrying transient failures with backoff. A retry
    /// first asks whether the previous attempt committed after all (its `batch_id` is kept), so
    /// a write whose answer was lost is neither written twice nor reported as duplicates.
    func attempt(_ batch: [PendingMessage], spill: SpillOnce) async -> Attempt {
        var delay = Duration.milliseconds(100)
        var attempt = 0
        let shutdownDeadline = ContinuousClock.now + .seconds(30)
        let connectors = Set(batch.map(\.connectorID))
        let batchID = Self.newBatchID()
        // Inserts that ran past the deadline right after the database had answered this batch's
        // check: the database is there but too slow for the batch (not away, as in an outage,
        // where calls time out waiting for a connection).
        var slowInserts = 0
        var timedOutAfter = Duration.zero
        while true {
            attempt += 1
            let started = ContinuousClock.now
            let record = BatchRecord(
                batchID: batchID,
                connectorID: connectors.count == 1 ? connectors.first : nil,
                metrics: [
                    "queue_depth": .number(buffer.depth), "attempt": .number(attempt),
                    "bytes": .number(batch.reduce(0) { $0 + $1.data.utf8.count }),
                    "oldest_wait_ms": .number(Int(Date().timeIntervalSince(batch.first?.receivedAt ?? Date()) * 1000)),
                ]
            )
            do {
                let ids: [Int64?]
                var answered = false
                if attempt > 1, let committed = try await store.storedIDs(ofBatch: batchID, messages: batch) {
                    logger.info("a batch whose write went unanswered had committed", metadata: ["batch_id": "\(batchID)"])
                    ids = committed
                } else if slowInserts > 0, batch.count > 1 {
                    sizeCap.withLock { $0.timedOut(batch.count, after: timedOutAfter) }
                    logger.warning(
                        "a batch did not finish within the database timeout; writing it in halves",
                        metadata: ["messages": "\(batch.count)", "batch_id": "\(batchID)"]
                    )
                    return .tooSlow
                } else {
                    answered = attempt > 1
                    do {
                        ids = try await store.insertMessages(batch, batch: record)
                    } catch StoreError.timedOut(let reason) where answered {
                        slowInserts += 1
                        throw StoreError.timedOut(reason)
                    }
                }
                let elapsed = ContinuousClock.now - started
                var stored: [StoredMessage] = []
                stored.reserveCapacity(batch.count)
                var outcomes: [String: (stored: Int, duplicates: Int)] = [:]
                for (pending, id) in zip(batch, ids) {
                    if let id {
                        stored.append(StoredMessage(id: id, pending: pending))
                        outcomes[pending.connectorID, default: (0, 0)].stored += 1
                    } else {
                        outcomes[pending.connectorID, default: (0, 0)].duplicates += 1
                    }
                }
                metrics.recordFlush(outcomes: outcomes, latency: elapsed)
                sizeCap.withLock { $0.wrote(batch.count, in: elapsed) }
                buffer.setDatabaseAvailable(true)
                return .stored(stored)
            } catch let error as StoreError where error.isPermanent {
                metrics.recordFlushFailure()
                logger.warning(
                    "the database refused a batch; splitting it to find the refused messages",
                    metadata: ["error": "\(error)", "messages": "\(batch.count)"]
                )
                return .refused(error)
            } catch {
                metrics.recordFlushFailure()
                if case StoreError.timedOut = error { timedOutAfter = ContinuousClock.now - started }
                // From now on (until a write succeeds) new messages get a spool copy, and so does this batch.
                buffer.setDatabaseAvailable(false)
                let spooled = spill.spill()
                logger.warning(
                    "batch write failed; retrying",
                    metadata: [
                        "error_type": "\(type(of: error))", "error": "\(error)", "messages": "\(batch.count)", "attempt": "\(attempt)",
                        "retry_in_ms": "\(delay.inMilliseconds)",
                    ]
                )
                // Cancelled (not a graceful shutdown): no retry can wait, so none is made.
                if Task.isCancelled || Task.isShuttingDownGracefully && (spooled || ContinuousClock.now > shutdownDeadline) {
                    if spooled {
                        logger.notice("shutting down without a database; the batch stays in the spool", metadata: ["messages": "\(batch.count)"])
                    } else {
                        unwritten.add(batch.count, ordering: .relaxed)
                        logger.error(
                            "shutting down with unwritten messages",
                            metadata: ["messages": "\(batch.count)", "error_type": "\(type(of: error))"]
                        )
                    }
                    spill.abandon()
                    return .abandoned
                }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, maxRetryDelay)
            }
        }
    }
}

extension BatchWriter {
    /// `batch_` and 32 hex digits: 64 random bits drawn once per process, then a count. Unique
    /// within the process, and across processes as unlikely to repeat as two random 64-bit draws,
    /// without a system call per batch (it was two `getrandom` calls a batch; Foundation's `UUID()`
    /// before that opened and closed /dev/urandom each time).
    static func newBatchID() -> String {
        let count = batchCount.wrappingAdd(1, ordering: .relaxed).newValue
        let bytes = withUnsafeBytes(of: batchPrefix.bigEndian, Array.init) + withUnsafeBytes(of: count.bigEndian, Array.init)
        return "batch_" + Base64.hex(bytes)
    }

    /// The random half of every batch id of this process.
    private static let batchPrefix = UInt64.random(in: .min ... .max)
    /// Batch ids made so far (wraps after 2^64).
    private static let batchCount = Atomic<UInt64>(0)
}

/// How many messages the writer takes at most: `BATCH_MAX_MESSAGES`, halved (down to 1) by a
/// batch that ran past the database timeout, so a database too slow for a full batch still gets
/// the rows through in smaller ones instead of seeing the same timed-out write again and again;
/// doubled again by a batch at the cap written in under a quarter of that timeout.
struct BatchSizeCap {
    let maximum: Int
    var messages: Int
    /// How long the last timed-out write ran (its deadline).
    var deadline: Duration?

    init(maximum: Int) {
        self.maximum = max(1, maximum)
        messages = self.maximum
    }

    mutating func timedOut(_ count: Int, after elapsed: Duration) {
        messages = min(messages, max(1, count / 2))
        deadline = elapsed
    }

    mutating func wrote(_ count: Int, in elapsed: Duration) {
        guard messages < maximum, count >= messages, let deadline, elapsed * 4 < deadline else { return }
        messages = min(maximum, messages * 2)
    }
}

enum WriterEvent: Sendable {
    case wrote
    case tick
}

/// A batch's spool copy: made once, of the messages that had none, on the first failed write of
/// any part of the batch or when the write turns slow; whether the batch was abandoned (its
/// records then stay); and whether it holds the buffer in its slow-write state.
final class SpillOnce: Sendable {
    struct State {
        var spilled = false
        var holds: [Int: Int] = [:]
        var abandoned = false
        var slow = false
        var finished = false
    }

    let buffer: IngestBuffer
    let batch: [PendingMessage]
    let unspooled: [PendingMessage]
    private let state = Mutex(State())

    init(buffer: IngestBuffer, batch: [PendingMessage], unspooled: [PendingMessage]) {
        self.buffer = buffer
        self.batch = batch
        self.unspooled = unspooled
    }

    /// A failed write: makes the copy if not made yet and sends the batch to realtime clients as
    /// not persisted; true when every message of the batch now has a copy.
    func spill() -> Bool {
        guard buffer.spool != nil else { return false }
        buffer.announceUnstored(batch)
        return state.withLock { copy(&$0) }
    }

    /// The write has run past the slow-write threshold: the copy is made (realtime clients are not
    /// told), and the buffer copies what waits behind it until `finish`. Nothing once finished.
    func writeIsSlow() {
        state.withLock { state in
            guard !state.finished, !state.slow else { return }
            state.slow = true
            buffer.slowWriteBegan()
            _ = copy(&state)
        }
    }

    private func copy(_ state: inout State) -> Bool {
        if !state.spilled {
            state.spilled = true
            state.holds = buffer.spill(unspooled)
            if state.holds.isEmpty, !unspooled.isEmpty { state.spilled = false }
        }
        return state.spilled
    }

    func abandon() { state.withLock { $0.abandoned = true } }

    /// The write is over: ends the slow-write state it began, and returns the records to release
    /// with the batch, nil when it was abandoned.
    func finish(adding holds: [Int: Int]) -> [Int: Int]? {
        state.withLock { state in
            state.finished = true
            if state.slow { buffer.slowWriteEnded() }
            return state.abandoned ? nil : state.holds.merging(holds, uniquingKeysWith: +)
        }
    }
}

/// One write's realtime deadline: past it (and before the write ends) the publisher announces
/// early; the write's end ends that.
final class EarlyOnce: Sendable {
    let publisher: OrderedPublisher
    let watch: DeadlineWatch
    /// The deadline's id in `watch`; whether it fired; whether the write ended.
    private let state = Mutex<(id: Int, began: Bool, finished: Bool)>((0, false, false))

    init(publisher: OrderedPublisher, watch: (watch: DeadlineWatch, after: Duration)) {
        self.publisher = publisher
        self.watch = watch.watch
        // Locked across the add, so a deadline firing at once finds its id set.
        state.withLock { state in
            state.id = watch.watch.add(at: .now + watch.after) { self.fire() }
        }
    }

    /// Under the lock, so that `finish` cannot run between the check and the announcement.
    private func fire() {
        state.withLock { state in
            guard !state.finished, !state.began else { return }
            state.began = true
            publisher.announceEarly()
        }
    }

    func finish() {
        state.withLock { state in
            guard !state.finished else { return }
            state.finished = true
            watch.remove(state.id)
            if state.began { publisher.buffer.endAnnouncingEarly() }
        }
    }
}

/// Hands committed batches to the broadcaster in the order they were taken from the buffer, even
/// when a later batch commits first.
final class OrderedPublisher: Sendable {
    let broadcaster: Broadcaster
    let buffer: IngestBuffer
    private let state = Mutex<(next: Int, ready: [Int: (messages: [StoredMessage], takes: [UInt64])])>((0, [:]))

    init(broadcaster: Broadcaster, buffer: IngestBuffer) {
        self.broadcaster = broadcaster
        self.buffer = buffer
    }

    /// Messages already sent before they were stored (`PendingMessage.announced`) are not sent
    /// again; which those are is read when the batch's turn comes, under the lock that
    /// `announceEarly` holds too.
    func publish(_ messages: [StoredMessage], ticket: Int, takes: [UInt64]) {
        let announced = { (message: StoredMessage) in message.pending.announced.load(ordering: .relaxed) }
        state.withLock { state in
            state.ready[ticket] = (messages, takes)
            while let batch = state.ready.removeValue(forKey: state.next) {
                // A copy only when something was announced (outages, slow writes), not on every batch.
                broadcaster.publish(batch.messages.contains(where: announced) ? batch.messages.filter { !announced($0) } : batch.messages)
                buffer.broadcast(batch.takes)
                state.next += 1
            }
        }
    }

    /// A write has run past `REALTIME_UNPERSISTED_AFTER_MS`: the buffer sends what was taken
    /// and not broadcast yet, and what waits, before any committed batch goes out (see
    /// `IngestBuffer.beginAnnouncingEarly`).
    func announceEarly() {
        state.withLock { _ in buffer.beginAnnouncingEarly() }
    }
}
