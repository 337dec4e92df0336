import Foundation

/// What several instances on one PostgreSQL coordinate through (see `ClusterCoordinator`):
/// the `instances` registry, `connector_leases`, and one `LISTEN`/`NOTIFY` channel. Times are
/// the database's (`now()`), so instances need not agree on a clock.
public protocol ClusterStore: Sendable {
    /// Records this instance as alive (upsert) and returns every instance whose heartbeat is
    /// younger than `ttl`, this one included.
    func heartbeat(_ instance: InstanceInfo, ttl: Duration) async throws -> [InstanceRow]
    /// Extends every lease `owner` holds (expired ones too, if nobody took them), records the
    /// message rates measured for them (`rates`, per second; others keep theirs), forgets
    /// hand-over requests from instances no longer alive, and returns those it still holds.
    func renewLeases(owner: String, ttl: Duration, rates: [String: Double]) async throws -> [String: HeldLease]
    /// Takes the lease of `connectorID` when it is free, expired, reserved for `owner`, or already
    /// `owner`'s; the epoch goes up by one when the owner changes. Nil when another instance holds
    /// or has been offered it (or the connector is gone).
    func acquireLease(connectorID: String, owner: String, ttl: Duration) async throws -> Int64?
    /// Lets leases go (epochs kept, so they keep increasing): with `to` nil at once to anyone;
    /// with `to` reserved for that instance until `ttl` passes, then to anyone.
    func releaseLeases(_ connectorIDs: [String], owner: String, to: String?, ttl: Duration) async throws
    /// Asks the owner of `connectorID` (`owner`, at `epoch`) to hand it over to `to`: the owner
    /// sees it when renewing. False when the lease has changed meanwhile.
    func requestHandOver(connectorID: String, owner: String, epoch: Int64, to: String) async throws -> Bool
    /// Every lease that has not expired (held, or reserved for an instance).
    func validLeases() async throws -> [String: LeaseRow]
    /// Marks an instance as stopped (a graceful shutdown), so others do not wait for its heartbeat.
    func markStopped(_ instanceID: String) async throws
    /// Every registered instance with the connectors it holds valid leases for, newest first;
    /// alive when its heartbeat is younger than `ttl`.
    func instances(ttl: Duration) async throws -> [InstanceRow]
    /// Sends `payload` to every listener of the cluster channel (delivered on commit).
    func notify(_ payload: String) async throws
    /// Runs `handle` for every notification on the cluster channel until cancelled or the
    /// connection fails (then it throws; the caller reconnects). `listening` runs once the
    /// `LISTEN` is in place, before any notification is handled.
    func listen(listening: @escaping @Sendable () async -> Void, _ handle: @escaping @Sendable (String) async -> Void) async throws
    /// Committed messages by id, as the realtime API sends them (for another instance's batch).
    func storedMessages(ids: [Int64]) async throws -> [StoredMessage]
    /// The ids a committed batch wrote (`websocket_batches.messages`), for a batch too large to name in a notification.
    func batchMessageIDs(batchID: String) async throws -> [Int64]
    /// Batches committed by instances other than `excludingInstance` since `since`: (batch id, message ids).
    func batches(since: Date, excludingInstance: String) async throws -> [(batchID: String, ids: [Int64])]
}

/// A lease this instance holds.
public struct HeldLease: Sendable, Equatable {
    public var epoch: Int64
    /// Another instance the lease should be handed over to (balancing by message rate).
    public var handOverTo: String?
}

/// A valid lease as every instance sees it.
public struct LeaseRow: Sendable, Equatable {
    /// The holder; empty while reserved for `offeredTo`.
    public var owner: String
    public var epoch: Int64
    /// The connector's recent message rate (per second), as its owner last measured it.
    public var rate: Double
    /// Reserved for (owner empty), or asked to be handed over to (owner set).
    public var offeredTo: String?
    /// How long the current owner has held it.
    public var heldFor: Duration
}

/// This instance, as it registers.
public struct InstanceInfo: Sendable {
    public var instanceID: String
    public var address: String
    public var version: String

    public init(instanceID: String, address: String, version: String) {
        self.instanceID = instanceID
        self.address = address
        self.version = version
    }
}

/// A row of `instances`, with the connectors it holds.
public struct InstanceRow: Sendable, Equatable {
    public var instanceID: String
    public var address: String
    public var version: String
    public var startedAt: Date
    public var heartbeatAt: Date
    public var stopped: Bool
    public var alive: Bool
    public var connectors: [String]
    /// The sum of its connectors' recent message rates, as recorded in their leases.
    public var messagesPerSecond: Double

    public var json: JSONValue {
        .object([
            "instance_id": .string(instanceID), "address": .string(address), "version": .string(version),
            "started_at": .string(Timestamp.format(startedAt)), "heartbeat_at": .string(Timestamp.format(heartbeatAt)),
            "status": .string(stopped ? "stopped" : alive ? "alive" : "lost"),
            "connectors": .array(connectors.map { .string($0) }),
            "messages_per_second": .number(String(format: "%.1f", messagesPerSecond.isFinite ? messagesPerSecond : 0)),
        ])
    }
}
