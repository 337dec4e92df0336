import DequeModule
import Foundation
import Synchronization

/// When accepted messages are written to the spool before the database has them.
public enum SpoolMode: String, Sendable, CaseIterable {
    /// Once the memory buffer holds `SPOOL_MEMORY_MESSAGES`, while the database is unavailable, and
    /// while a write has been running longer than `SPOOL_SLOW_WRITE_MS` (the default).
    case spill
    /// Every message, as it is accepted (the memory buffer keeps a copy for the writer).
    case always
    /// Never: memory only; when it is full new messages are refused and counted as dropped.
    case off
}

/// What the writer takes from the buffer: messages in the order they were accepted, and the
/// spool records that hold them (segment → records), to release once they are in the database.
public struct IngestBatch: Sendable {
    public var messages: [PendingMessage]
    var holds: [Int: Int] = [:]
    /// The messages that have no copy in the spool (to spill there if the database fails).
    var unspooled: [PendingMessage] = []
    /// The takes these messages came from, while the buffer tracks them (`announcesEarly`):
    /// end them with `IngestBuffer.broadcast(_:)` once the batch has gone to realtime clients.
    var takes: [UInt64] = []

    public var isEmpty: Bool { messages.isEmpty }

    /// `other`'s messages after these (taken later from the same buffer).
    mutating func append(_ other: IngestBatch) {
        messages += other.messages
        holds.merge(other.holds, uniquingKeysWith: +)
        unspooled += other.unspooled
        takes += other.takes
    }
    public var count: Int { messages.count }
}

/// The queue between connectors and the batch writer: memory first, then the durable spool.
///
/// Connectors append without waiting on the database. Up to `memoryMessages` messages wait in
/// memory; beyond that (or while the database is unavailable, or always in `SpoolMode.always`)
/// they go to the spool on disk (while a write is slow they get a copy there, `slowWriteBegan`),
/// and once anything waits in the spool every new message follows it there, so the writer takes
/// them in the order they came. When the spool reaches its size
/// limit, `hasRoom` turns false and connectors stop reading their sockets until it drains; what
/// a connector already read still goes into memory, up to `capacity`, beyond which messages are
/// refused and counted as dropped. Without a spool (`SpoolMode.off`) memory is the only tier.
public final class IngestBuffer: Sendable {
    struct Entry {
        let message: PendingMessage
        /// The spool segment holding a copy, if any.
        var segment: Int?
    }

    struct State {
        var memory = Deque<Entry>()
        var closed = false
        var dropped = 0
        var databaseAvailable = true
        /// Writes running past the slow-write threshold (`slowWriteBegan`) and not ended yet.
        var slowWrites = 0
        var slowWritesTotal = 0
        /// Writes past the realtime threshold (`beginAnnouncingEarly`) and not ended yet; while
        /// there are any, new messages go to realtime clients as they are appended.
        var earlyWrites = 0
        /// A message went to the spool unannounced while writes were early (a backlog): nothing
        /// more is announced on append until the early writes end, or it would overtake that one.
        var earlySuspended = false
        /// Messages sent ahead of their commit because a write ran long, since the start.
        var announcedEarlyTotal = 0
        var nextTake: UInt64 = 0
        /// Messages taken by the writer and not broadcast yet, by take (`announcesEarly` only).
        var unbroadcast: [UInt64: [PendingMessage]] = [:]
        /// The lingering writer's early wake-up (see `wakeOnAppend(from:_:)`).
        var lingering: (from: UInt64, wake: @Sendable () -> Void)?
    }

    /// Messages held in memory at most (the last resort when the spool is full or failing).
    public let capacity: Int
    /// Messages held only in memory before new ones go to the spool.
    public let memoryMessages: Int
    public let mode: SpoolMode
    public let spool: Spool?
    /// Sends messages to realtime clients before they are stored (set while the database is
    /// unavailable, so clients keep receiving updates, marked `"persisted": false`).
    let announce: @Sendable ([PendingMessage]) -> Void
    /// Tracks what the writer has taken until it is broadcast, so that a write running long can
    /// send it, and what waits behind it, to realtime clients before the commit, in order
    /// (`REALTIME_UNPERSISTED_AFTER_MS`; see `beginAnnouncingEarly`).
    let announcesEarly: Bool
    private let state = Mutex(State())
    /// Wakes the writer waiting in `take` (a kept signal, so none is lost between look and wait).
    private let wakeup = SignalledQueue<Bool>(capacity: 1, overflow: .dropOldest)
    /// See `readsMayWaitUntil`.
    private let nextWriteNotBefore = Atomic<UInt64>(0)

    /// A memory-only buffer (no spool).
    public convenience init(capacity: Int) {
        self.init(capacity: capacity, spool: nil, mode: .off, memoryMessages: capacity)
    }

    public init(
        capacity: Int,
        spool: Spool?,
        mode: SpoolMode,
        memoryMessages: Int,
        announcesEarly: Bool = false,
        announce: @escaping @Sendable ([PendingMessage]) -> Void = { _ in }
    ) {
        self.announce = announce
        self.announcesEarly = announcesEarly
        self.capacity = capacity
        self.spool = mode == .off ? nil : spool
        self.mode = spool == nil ? .off : mode
        self.memoryMessages = min(memoryMessages, capacity)
    }

    /// Appends `messages` (memory or spool, see the type); returns how many were refused because
    /// memory is full and the spool cannot take them (or the buffer is closed).
    ///
    /// `wakingTheWriter` false leaves the writer asleep until `wakeWriter()`: a connector reading
    /// several frames in one go hands them over in one take, even when the writer runs on another
    /// thread and would otherwise take the first of them alone.
    @discardableResult
    public func append(contentsOf messages: [PendingMessage], wakingTheWriter: Bool = true) -> Int {
        guard !messages.isEmpty else { return 0 }
        let (refused, announced, wake) = state.withLock { state -> (Int, [PendingMessage], (@Sendable () -> Void)?) in
            guard !state.closed else {
                state.dropped += messages.count
                return (messages.count, [], nil)
            }
            let wake = wakingTheWriter ? Self.lingeringWake(in: &state) : nil
            // Marked before the spool copy is written, so a replay does not send them again.
            var announced = state.databaseAvailable || spool == nil ? [] : Self.markAnnounced(messages)
            let early = state.earlyWrites > 0 && !state.earlySuspended
            let unreadBefore = early ? spool?.unread ?? 0 : 0
            let refused = place(messages, in: &state)
            state.dropped += refused
            if early {
                if unreadBefore > 0 || (spool?.unread ?? 0) > unreadBefore {
                    // Behind a backlog in the spool: announcing these would overtake it.
                    state.earlySuspended = true
                } else {
                    // Sent after the lock, in order all the same: a connector's appends follow one
                    // another, and what came before them went out when the early writes began.
                    let early = Self.markAnnounced(messages.dropLast(refused))
                    state.announcedEarlyTotal += early.count
                    announced += early
                }
            }
            return (refused, announced, wake)
        }
        if wakingTheWriter {
            wakeup.append(contentsOf: CollectionOfOne(true))
            wake?()
        }
        if !announced.isEmpty { announce(announced) }
        return refused
    }

    /// Memory while there is room and nothing waits in the spool (with a spool copy when the mode
    /// or an unavailable database asks for one); else the spool; else memory up to `capacity`.
    private func place(_ messages: [PendingMessage], in state: inout State) -> Int {
        guard let spool else { return keepInMemory(messages, segment: nil, in: &state) }
        if state.memory.count < memoryMessages, spool.unread == 0 {
            var segment: Int?
            if mode == .always || !state.databaseAvailable || state.slowWrites > 0 {
                segment = try? spool.append(messages, heldInMemory: true)
                if segment == nil { spool.countWriteFailure() }
            }
            for message in messages { state.memory.append(Entry(message: message, segment: segment)) }
            return 0
        }
        if !spool.isFull {
            do {
                _ = try spool.append(messages, heldInMemory: false)
                return 0
            } catch {
                spool.countWriteFailure()
            }
        }
        return keepInMemory(messages, segment: nil, in: &state)
    }

    private func keepInMemory(_ messages: [PendingMessage], segment: Int?, in state: inout State) -> Int {
        let room = max(0, capacity - state.memory.count)
        for message in messages.prefix(room) { state.memory.append(Entry(message: message, segment: segment)) }
        return max(0, messages.count - room)
    }

    /// When the longest-waiting message was received: the first in memory, else the oldest spool
    /// record not yet in the database (which may already be in a write: an early answer is safe).
    var oldestWaiting: Date? {
        if let head = state.withLock({ $0.memory.first?.message.receivedAt }) { return head }
        guard let spool, spool.unread > 0, let micros = spool.snapshot.oldestMicros else { return nil }
        return Date(timeIntervalSince1970: Double(micros) / 1_000_000)
    }

    /// Messages waiting: in memory, and in the spool not yet taken.
    public var depth: Int { state.withLock { $0.memory.count } + (spool?.unread ?? 0) }
    public var droppedCount: Int { state.withLock { $0.dropped } }

    /// Until when (uptime nanoseconds, `DispatchTime`'s clock) no write will start, because the
    /// writer lingers after its last take (0: no such time). A connector may hold its socket reads
    /// until shortly before then: what it reads by then still makes the next write.
    public var readsMayWaitUntil: UInt64 { nextWriteNotBefore.load(ordering: .relaxed) }

    /// The writer's promise that no write starts before `uptimeNanoseconds` (see `readsMayWaitUntil`).
    func noWriteBefore(uptimeNanoseconds: UInt64) {
        nextWriteNotBefore.store(uptimeNanoseconds, ordering: .relaxed)
    }

    /// While the writer lingers: the first append from `uptimeNanoseconds` on (what connectors
    /// held until the writer's start, `readsMayWaitUntil`, read at last) calls `wake`, once.
    func wakeOnAppend(from uptimeNanoseconds: UInt64, _ wake: @escaping @Sendable () -> Void) {
        state.withLock { $0.lingering = (uptimeNanoseconds, wake) }
    }

    /// Wakes the writer for what was appended without waking it.
    public func wakeWriter() {
        let wake = state.withLock { Self.lingeringWake(in: &$0) }
        wakeup.append(contentsOf: CollectionOfOne(true))
        wake?()
    }

    /// The lingering writer's wake-up when it is due (see `wakeOnAppend`), taken out.
    private static func lingeringWake(in state: inout State) -> (@Sendable () -> Void)? {
        guard let lingering = state.lingering, DispatchTime.now().uptimeNanoseconds >= lingering.from else { return nil }
        state.lingering = nil
        return lingering.wake
    }

    /// The writer lingers no more.
    func stopWakingOnAppend() {
        state.withLock { $0.lingering = nil }
    }

    /// False while the spool is at its size limit: connectors pause reading until it is true again.
    public var hasRoom: Bool { !(spool?.isFull ?? false) }

    /// Waits until something is pending, then takes up to `limit` messages, memory first, then
    /// the spool; an empty batch once closed and drained, or when the task is cancelled.
    public func take(upTo limit: Int) async -> IngestBatch {
        while true {
            if let fromMemory = takeFromMemory(upTo: limit) { return fromMemory }
            if let spool, spool.unread > 0 {
                // Read under the lock when takes are tracked, so a sweep sees them either here or there.
                let batch =
                    announcesEarly
                    ? state.withLock { Self.batch(of: spool.read(limit: limit), tracked: &$0) } : Self.batch(of: spool.read(limit: limit))
                if !batch.isEmpty { return batch }
                // Only skipped or damaged records: the count catches up once the reader reaches the end.
                try? await Task.sleep(for: .milliseconds(5))
                continue
            }
            if state.withLock({ $0.closed }) || Task.isCancelled { return IngestBatch(messages: []) }
            _ = await wakeup.take()
        }
    }

    private static func batch(of records: [(message: PendingMessage, segment: Int)]) -> IngestBatch {
        var batch = IngestBatch(messages: records.map(\.message))
        for record in records { batch.holds[record.segment, default: 0] += 1 }
        return batch
    }

    private static func batch(of records: [(message: PendingMessage, segment: Int)], tracked state: inout State) -> IngestBatch {
        var batch = batch(of: records)
        track(&batch, in: &state)
        return batch
    }

    private static func track(_ batch: inout IngestBatch, in state: inout State) {
        guard !batch.isEmpty else { return }
        state.nextTake += 1
        state.unbroadcast[state.nextTake] = batch.messages
        batch.takes.append(state.nextTake)
    }

    /// Up to `limit` messages held in memory, oldest first; nil when memory holds none. (Never
    /// the spool: what waits there is newer than what waits in memory, see `place`.)
    func takeFromMemory(upTo limit: Int) -> IngestBatch? {
        state.withLock { state in
            guard !state.memory.isEmpty else { return nil }
            let count = min(limit, state.memory.count)
            var batch = IngestBatch(messages: [])
            batch.messages.reserveCapacity(count)
            for entry in state.memory.prefix(count) {
                batch.messages.append(entry.message)
                if let segment = entry.segment {
                    batch.holds[segment, default: 0] += 1
                } else {
                    batch.unspooled.append(entry.message)
                }
            }
            state.memory.removeFirst(count)
            if announcesEarly { Self.track(&batch, in: &state) }
            return batch
        }
    }

    /// The writer's view of the database. When it becomes unavailable, every message held only in
    /// memory gets a spool copy, and new messages get one as they come, until it is back.
    public func setDatabaseAvailable(_ available: Bool) {
        let announced = state.withLock { state -> [PendingMessage] in
            guard state.databaseAvailable != available else { return [] }
            state.databaseAvailable = available
            guard !available, spool != nil else { return [] }
            // What waits in memory goes to realtime clients now, not once the database is back.
            let announced = Self.markAnnounced(state.memory.map(\.message))
            copyMemoryToSpool(&state)
            return announced
        }
        if !announced.isEmpty { announce(announced) }
    }

    /// A write has run longer than the slow-write threshold: until it ends (`slowWriteEnded`),
    /// every message held only in memory gets a spool copy, and so does each new one, so a crash
    /// meanwhile cannot lose what waits behind the slow write (the batch writer copies the slow
    /// write's own messages). Unlike an unavailable database, realtime clients are not told.
    func slowWriteBegan() {
        state.withLock { state in
            state.slowWrites += 1
            state.slowWritesTotal += 1
            copyMemoryToSpool(&state)
        }
    }

    func slowWriteEnded() { state.withLock { $0.slowWrites -= 1 } }

    /// A write has run past the realtime threshold (`REALTIME_UNPERSISTED_AFTER_MS`): until it
    /// ends (`endAnnouncingEarly`), realtime clients get updates before their commit, marked
    /// not persisted. Sends now, in the order they were taken and received, every message taken
    /// and not broadcast yet and every message waiting in memory; from then on each message as
    /// it is appended. Call it from `OrderedPublisher.announceEarly`, which holds off committed
    /// batches meanwhile. Nothing without `announcesEarly`, or behind a backlog in the spool
    /// (what waits there would be overtaken).
    func beginAnnouncingEarly() {
        guard announcesEarly else { return }
        state.withLock { state in
            state.earlyWrites += 1
            guard state.earlyWrites == 1 else { return }
            guard (spool?.unread ?? 0) == 0 else {
                state.earlySuspended = true
                return
            }
            var waiting: [PendingMessage] = []
            for take in state.unbroadcast.keys.sorted() { waiting += state.unbroadcast[take] ?? [] }
            waiting += state.memory.map(\.message)
            let announced = Self.markAnnounced(waiting)
            state.announcedEarlyTotal += announced.count
            if !announced.isEmpty { announce(announced) }
        }
    }

    /// Messages sent to realtime clients ahead of their commit because a write ran long.
    public var announcedEarlyTotal: Int { state.withLock { $0.announcedEarlyTotal } }

    /// A write that ran long has not ended yet: new messages go out as they are appended.
    var announcingEarly: Bool { state.withLock { $0.earlyWrites > 0 } }

    /// The write that began announcing early is over.
    func endAnnouncingEarly() {
        state.withLock { state in
            state.earlyWrites -= 1
            if state.earlyWrites == 0 { state.earlySuspended = false }
        }
    }

    /// The batch of `takes` has gone to realtime clients (or had nothing to send).
    func broadcast(_ takes: [UInt64]) {
        guard !takes.isEmpty else { return }
        state.withLock { state in
            for take in takes { state.unbroadcast.removeValue(forKey: take) }
        }
    }

    /// Writes that ran past the slow-write threshold, since the start.
    public var slowWritesTotal: Int { state.withLock { $0.slowWritesTotal } }

    /// Gives every message held only in memory a spool copy (in one record run).
    private func copyMemoryToSpool(_ state: inout State) {
        guard let spool else { return }
        let unspooled = state.memory.indices.filter { state.memory[$0].segment == nil }
        guard !unspooled.isEmpty else { return }
        guard let segment = try? spool.append(unspooled.map { state.memory[$0].message }, heldInMemory: true) else {
            spool.countWriteFailure()
            return
        }
        for index in unspooled { state.memory[index].segment = segment }
    }

    /// Marks as announced the messages not announced yet, and returns those.
    static func markAnnounced(_ messages: [PendingMessage]) -> [PendingMessage] {
        messages.filter { !$0.announced.exchange(true, ordering: .relaxed) }
    }

    public var databaseAvailable: Bool { state.withLock { $0.databaseAvailable } }

    /// Writes a spool copy of messages the writer holds (a batch whose write failed or is slow);
    /// returns the records that now hold them, to release with the batch. Empty without a spool
    /// or on failure.
    func spill(_ messages: [PendingMessage]) -> [Int: Int] {
        guard let spool, !messages.isEmpty else { return [:] }
        guard let segment = try? spool.append(messages, heldInMemory: true) else {
            spool.countWriteFailure()
            return [:]
        }
        return [segment: messages.count]
    }

    /// Sends to realtime clients, marked not persisted, the messages of `batch` not sent yet (a
    /// failed write: the database may be away long).
    func announceUnstored(_ batch: [PendingMessage]) {
        let announced = Self.markAnnounced(batch)
        if !announced.isEmpty { announce(announced) }
    }

    /// The messages of `holds` are in the database (or dead letters): their spool records can go.
    func release(_ holds: [Int: Int]) { spool?.release(holds) }

    /// No more messages are accepted; `take` drains what is left and then returns empty batches.
    public func close() {
        state.withLock { $0.closed = true }
        wakeup.close()
    }
}
