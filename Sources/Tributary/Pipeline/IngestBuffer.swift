import DequeModule
import Synchronization

/// The bounded queue between connectors and the batch writer.
///
/// Connectors append without ever waiting (reading frames never waits on the database); the single
/// writer takes everything pending whenever it is free. When full, new messages are refused and
/// counted as dropped, and the connector logs it: nothing is lost silently.
public final class IngestBuffer: Sendable {
    struct State {
        var messages = Deque<PendingMessage>()
        var waiter: CheckedContinuation<Void, Never>?
        var closed = false
        var dropped = 0
    }

    public let capacity: Int
    private let state = Mutex(State())

    public init(capacity: Int) { self.capacity = capacity }

    /// Appends what fits; returns how many messages were refused because the buffer is full.
    @discardableResult
    public func append(contentsOf messages: [PendingMessage]) -> Int {
        let (waiter, refused) = state.withLock { state -> (CheckedContinuation<Void, Never>?, Int) in
            let room = max(0, capacity - state.messages.count)
            let refused = max(0, messages.count - room)
            state.messages.append(contentsOf: messages.prefix(room))
            state.dropped += refused
            let waiter = state.waiter
            state.waiter = nil
            return (waiter, refused)
        }
        waiter?.resume()
        return refused
    }

    public var depth: Int { state.withLock { $0.messages.count } }
    public var droppedCount: Int { state.withLock { $0.dropped } }

    /// Waits until something is pending, then takes up to `limit` messages; `[]` once closed and
    /// drained, or when the task is cancelled.
    public func take(upTo limit: Int) async -> [PendingMessage] {
        while true {
            let result: [PendingMessage]? = state.withLock { state in
                if !state.messages.isEmpty {
                    let count = min(limit, state.messages.count)
                    let batch = Array(state.messages.prefix(count))
                    state.messages.removeFirst(count)
                    return batch
                }
                return state.closed ? [] : nil
            }
            if let result { return result }
            if Task.isCancelled { return [] }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state in
                        if !state.messages.isEmpty || state.closed || Task.isCancelled { return true }
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

    /// Stops waiting: `take` drains what is left and then returns `[]`.
    public func close() {
        let waiter = state.withLock { state in
            state.closed = true
            let waiter = state.waiter
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }
}
