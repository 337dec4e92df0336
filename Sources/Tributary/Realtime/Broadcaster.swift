import Foundation
import Synchronization

/// What a realtime client wants: empty sets mean "everything".
public struct RealtimeFilter: Sendable, Equatable {
    public var connectorIDs: Set<String> = []
    public var exchanges: Set<String> = []
    public var instruments: Set<String> = []

    public init(connectorIDs: Set<String> = [], exchanges: Set<String> = [], instruments: Set<String> = []) {
        self.connectorIDs = connectorIDs
        self.exchanges = exchanges
        self.instruments = instruments
    }

    /// Filter values held, across the three kinds.
    public var valueCount: Int { connectorIDs.count + exchanges.count + instruments.count }

    func matches(_ message: StoredMessage) -> Bool {
        (connectorIDs.isEmpty || connectorIDs.contains(message.pending.connectorID))
            && (exchanges.isEmpty || exchanges.contains(message.pending.message.exchange.rawValue))
            && (instruments.isEmpty || message.pending.message.instrument.map(instruments.contains) == true
                || message.pending.message.symbol.map(instruments.contains) == true)
    }
}

/// One client's bounded send queue. When full the oldest update is dropped and counted, so a
/// slow client never blocks the writer or other clients; a client that keeps overflowing is closed.
public final class RealtimeClientQueue: Sendable {
    public let id = UUID()
    let updates: SignalledQueue<RealtimeFrame>
    private let filterState: Mutex<RealtimeFilter>
    private let dropsSinceCheck = Atomic<Int>(0)
    let totals: BroadcastTotals

    /// Woken after updates are queued (see `ChannelSender`); without one, `next()` takes them.
    private let sender = Mutex<(any RealtimeSender)?>(nil)

    init(filter: RealtimeFilter, capacity: Int, totals: BroadcastTotals) {
        self.updates = SignalledQueue(capacity: capacity, overflow: .dropOldest)
        self.filterState = Mutex(filter)
        self.totals = totals
    }

    var capacity: Int { updates.capacity }

    public var filter: RealtimeFilter {
        get { filterState.withLock { $0 } }
        set { filterState.withLock { $0 = newValue } }
    }

    public func updateFilter(_ change: (inout RealtimeFilter) -> Void) {
        filterState.withLock { change(&$0) }
    }

    public var droppedCount: Int { updates.droppedCount }

    /// Drops since the last call; the session closes clients that keep overflowing.
    func takeDropsSinceCheck() -> Int { dropsSinceCheck.exchange(0, ordering: .relaxed) }

    /// Enqueues `frames`, dropping the oldest queued updates when full, and wakes the sender.
    /// Never waits.
    func enqueue(contentsOf frames: [RealtimeFrame]) {
        let dropped = updates.append(contentsOf: frames)
        if dropped > 0 {
            dropsSinceCheck.add(dropped, ordering: .relaxed)
            totals.dropped.add(dropped, ordering: .relaxed)
        }
        sender.withLock { $0 }?.wake()
    }

    /// `sender` is woken after every enqueue from now on (and once now, for what is queued already).
    func wake(_ sender: any RealtimeSender) {
        self.sender.withLock { $0 = sender }
        sender.wake()
    }

    /// Everything queued, without waiting.
    func takeQueued() -> [RealtimeFrame] { updates.takeAvailable() }

    /// The texts of everything queued, waiting until there is something; `nil` once closed and
    /// drained (or cancelled).
    func next() async -> [String]? {
        let frames = await updates.take()
        return frames.isEmpty ? nil : frames.map(\.text)
    }

    /// Ends the queue and lets go of its sender (which holds the queue: a cycle otherwise).
    func close() {
        updates.close()
        sender.withLock { $0 = nil }
    }
}

/// Sends a client's queued updates when woken.
protocol RealtimeSender: AnyObject, Sendable {
    func wake()
}

/// Counters of a broadcaster across clients past and present.
final class BroadcastTotals: Sendable {
    let dropped = Atomic<Int>(0)
}

/// Fans committed messages out to realtime clients. Each message is serialized once, and only if
/// some client wants it; publishing never waits for a client.
public final class Broadcaster: Sendable {
    let clients = Mutex<[UUID: RealtimeClientQueue]>([:])
    public let queueCapacity: Int
    let totals = BroadcastTotals()

    public init(queueCapacity: Int = 10_000) { self.queueCapacity = queueCapacity }

    public func register(filter: RealtimeFilter) -> RealtimeClientQueue {
        let client = RealtimeClientQueue(filter: filter, capacity: queueCapacity, totals: totals)
        clients.withLock { $0[client.id] = client }
        return client
    }

    public func unregister(_ client: RealtimeClientQueue) {
        _ = clients.withLock { $0.removeValue(forKey: client.id) }
        client.close()
    }

    public var clientCount: Int { clients.withLock { $0.count } }

    /// Updates dropped for slow clients since the server started.
    public var droppedCount: Int { totals.dropped.load(ordering: .relaxed) }

    /// Each client gets the batch's updates it wants in one append (one lock and at most one
    /// wake-up per client per batch); each update is serialized and framed once, when a client
    /// first wants it, and its bytes are shared by every client that wants it.
    public func publish(_ messages: [StoredMessage]) {
        let clients = self.clients.withLock { Array($0.values) }
        guard !clients.isEmpty else { return }
        var updates = [RealtimeFrame?](repeating: nil, count: messages.count)
        var wanted: [RealtimeFrame] = []
        for client in clients {
            let filter = client.filter
            wanted.removeAll(keepingCapacity: true)
            for (index, message) in messages.enumerated() where filter.matches(message) {
                let update = updates[index] ?? RealtimeFrame(utf8: message.updateUTF8)
                updates[index] = update
                wanted.append(update)
            }
            if !wanted.isEmpty { client.enqueue(contentsOf: wanted) }
        }
    }
}
