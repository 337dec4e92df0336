/// The bounded queue between connectors and the batch writer.
///
/// Connectors append without ever waiting (reading frames never waits on the database); the single
/// writer takes everything pending whenever it is free. When full, new messages are refused and
/// counted as dropped, and the connector logs it: nothing is lost silently.
public final class IngestBuffer: Sendable {
    let queue: SignalledQueue<PendingMessage>

    public init(capacity: Int) { queue = SignalledQueue(capacity: capacity, overflow: .refuseNew) }

    public var capacity: Int { queue.capacity }

    /// Appends what fits; returns how many messages were refused because the buffer is full (or closed).
    @discardableResult
    public func append(contentsOf messages: [PendingMessage]) -> Int { queue.append(contentsOf: messages) }

    public var depth: Int { queue.count }
    public var droppedCount: Int { queue.droppedCount }

    /// Waits until something is pending, then takes up to `limit` messages; `[]` once closed and
    /// drained, or when the task is cancelled.
    public func take(upTo limit: Int) async -> [PendingMessage] { await queue.take(upTo: limit) }

    /// Stops waiting: `take` drains what is left and then returns `[]`.
    public func close() { queue.close() }
}
