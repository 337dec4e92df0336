import Foundation

/// What several instances on one PostgreSQL coordinate through (see `ClusterCoordinator`):
/// the `instances` registry, `connector_leases`, and one `LISTEN`/`NOTIFY` channel. Times are
/// the database's (`now()`), so instances need not agree on a clock.
public protocol ClusterStore: Sendable {
    /// Records this instance as alive (upsert) and returns every instance whose heartbeat is
    /// younger than `ttl`, this one included.
    func heartbeat(_ instance: InstanceInfo, ttl: Duration) async throws -> [InstanceRow]
    /// Extends every lease `owner` holds (expired ones too, if nobody took them) and returns
    /// connector id → epoch of those it still holds.
    func renewLeases(owner: String, ttl: Duration) async throws -> [String: Int64]
    /// Takes the lease of `connectorID` when it is free, expired, or already `owner`'s; the epoch
    /// goes up by one when the owner changes. Nil when another instance holds it (or the
    /// connector is gone).
    func acquireLease(connectorID: String, owner: String, ttl: Duration) async throws -> Int64?
    /// Lets leases go at once: expired now and owned by nobody (epochs kept, so they keep increasing).
    func releaseLeases(_ connectorIDs: [String], owner: String) async throws
    /// Every lease that has not expired: connector id → owner.
    func validLeases() async throws -> [String: String]
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

    public var json: JSONValue {
        .object([
            "instance_id": .string(instanceID), "address": .string(address), "version": .string(version),
            "started_at": .string(Timestamp.format(startedAt)), "heartbeat_at": .string(Timestamp.format(heartbeatAt)),
            "status": .string(stopped ? "stopped" : alive ? "alive" : "lost"),
            "connectors": .array(connectors.map { .string($0) }),
        ])
    }
}
