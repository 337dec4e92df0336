import DequeModule
import Synchronization

/// A bounded queue between producers that never wait and one consumer that waits for work.
///
/// When full, new elements are either refused (`refuseNew`: the producer is told and counts them)
/// or make room by dropping the oldest (`dropOldest`). The consumer takes in bulk; `take` returns
/// what is left after `close()`, then `[]`.
final class SignalledQueue<Element: Sendable>: Sendable {
    enum Overflow: Sendable {
        case refuseNew
        case dropOldest
    }

    struct State {
        var items = Deque<Element>()
        var waiter: CheckedContinuation<Void, Never>?
        var closed = false
        var dropped = 0
    }

    let capacity: Int
    let overflow: Overflow
    private let state = Mutex(State())

    init(capacity: Int, overflow: Overflow) {
        self.capacity = capacity
        self.overflow = overflow
    }

    var count: Int { state.withLock { $0.items.count } }
    var droppedCount: Int { state.withLock { $0.dropped } }
    var isClosed: Bool { state.withLock { $0.closed } }

    /// Appends without waiting; returns how many elements were dropped (refused, or evicted oldest).
    /// Once closed nothing is added: a `refuseNew` queue refuses (and counts) everything, a
    /// `dropOldest` queue ignores it (its consumer is gone).
    @discardableResult
    func append(contentsOf elements: some Collection<Element>) -> Int {
        let (waiter, dropped) = state.withLock { state -> (CheckedContinuation<Void, Never>?, Int) in
            guard !state.closed else {
                guard overflow == .refuseNew else { return (nil, 0) }
                state.dropped += elements.count
                return (nil, elements.count)
            }
            var dropped = 0
            switch overflow {
            case .refuseNew:
                let room = max(0, capacity - state.items.count)
                dropped = max(0, elements.count - room)
                state.items.append(contentsOf: elements.prefix(room))
            case .dropOldest:
                state.items.append(contentsOf: elements)
                dropped = max(0, state.items.count - capacity)
                state.items.removeFirst(dropped)
            }
            state.dropped += dropped
            let waiter = state.waiter
            state.waiter = nil
            return (waiter, dropped)
        }
        waiter?.resume()
        return dropped
    }

    /// Takes everything queued without waiting (`[]` when nothing is).
    func takeAvailable() -> [Element] {
        state.withLock { state in
            let taken = Array(state.items)
            state.items.removeAll(keepingCapacity: true)
            return taken
        }
    }

    /// Waits until something is queued, then takes up to `limit` elements; `[]` once closed and
    /// drained, or when the waiting task is cancelled.
    func take(upTo limit: Int = .max) async -> [Element] {
        while true {
            let result: [Element]? = state.withLock { state in
                if !state.items.isEmpty {
                    let count = min(limit, state.items.count)
                    let taken = Array(state.items.prefix(count))
                    state.items.removeFirst(count)
                    return taken
                }
                return state.closed ? [] : nil
            }
            if let result { return result }
            if Task.isCancelled { return [] }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state in
                        if !state.items.isEmpty || state.closed || Task.isCancelled { return true }
                        state.waiter = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                let waiter = state.withLock { state in
                    let waiter = state.waiter
                    state.waiter = nil
                    return waiter
                }
                waiter?.resume()
            }
        }
    }

    /// No more elements are accepted; `take` drains what is left and then returns `[]`.
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
