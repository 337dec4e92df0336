import DequeModule
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
    struct State {
        var queue = Deque<String>()
        var filter: RealtimeFilter
        var waiter: CheckedContinuation<Void, Never>?
        var dropped = 0
        var droppedSinceCheck = 0
        var closed = false
    }

    public let id = UUID()
    let capacity: Int
    private let state: Mutex<State>
    let totals: BroadcastTotals

    init(filter: RealtimeFilter, capacity: Int, totals: BroadcastTotals) {
        self.capacity = capacity
        self.state = Mutex(State(filter: filter))
        self.totals = totals
    }

    public var filter: RealtimeFilter {
        get { state.withLock { $0.filter } }
        set { state.withLock { $0.filter = newValue } }
    }

    public func updateFilter(_ change: (inout RealtimeFilter) -> Void) {
        state.withLock { change(&$0.filter) }
    }

    public var droppedCount: Int { state.withLock { $0.dropped } }

    /// Drops since the last call; the session closes clients that keep overflowing.
    func takeDropsSinceCheck() -> Int {
        state.withLock { state in
            defer { state.droppedSinceCheck = 0 }
            return state.droppedSinceCheck
        }
    }

    /// Enqueues `text`, dropping the oldest queued update when full. Never waits.
    func enqueue(_ text: String) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.closed else { return nil }
            if state.queue.count >= capacity {
                state.queue.removeFirst()
                state.dropped += 1
                state.droppedSinceCheck += 1
                totals.dropped.add(1, ordering: .relaxed)
            }
            state.queue.append(text)
            let waiter = state.waiter
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Everything queued, waiting until there is something; `nil` once closed.
    func next() async -> [String]? {
        while true {
            let result: [String]?? = state.withLock { state in
                if !state.queue.isEmpty {
                    let all = Array(state.queue)
                    state.queue.removeAll(keepingCapacity: true)
                    return .some(all)
                }
                return state.closed ? .some(nil) : nil
            }
            if let result { return result }
            // Cancellation ends the session, so it closes the queue.
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state in
                        if !state.queue.isEmpty || state.closed { return true }
                        state.waiter = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                close()
            }
        }
    }

    func close() {
        let waiter = state.withLock { state in
            state.closed = true
            let waiter = state.waiter
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }
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

    public func publish(_ messages: [StoredMessage]) {
        let clients = self.clients.withLock { Array($0.values) }
        guard !clients.isEmpty else { return }
        let filters = clients.map(\.filter)
        for message in messages {
            var text: String?
            for (client, filter) in zip(clients, filters) where filter.matches(message) {
                if text == nil { text = JSONValue.object(["type": "data_update", "data": message.json]).serialized }
                client.enqueue(text!)
            }
        }
    }
}
