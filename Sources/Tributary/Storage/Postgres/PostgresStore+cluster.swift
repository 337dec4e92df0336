import Foundation
import PostgresNIO
import Synchronization

extension PostgresStore: ClusterStore {
    /// The one channel instances talk on; payloads are small JSON objects (see `ClusterMessage`).
    static let clusterChannel = "tributary_cluster"

    public func heartbeat(_ instance: InstanceInfo, ttl: Duration) async throws -> [InstanceRow] {
        heartbeats.add(1, ordering: .relaxed)
        _ = try await run("heartbeat") { [logger] client in
            try await client.query(
                """
                INSERT INTO instances (instance_id, address, version) VALUES (\(instance.instanceID), \(instance.address), \(instance.version))
                ON CONFLICT (instance_id) DO UPDATE SET address = EXCLUDED.address, version = EXCLUDED.version, heartbeat_at = NOW(),
                    stopped_at = NULL, started_at = CASE WHEN instances.stopped_at IS NULL THEN instances.started_at ELSE NOW() END
                """,
                logger: logger
            )
        }
        return try await instances(ttl: ttl).filter(\.alive)
    }

    public func instances(ttl: Duration) async throws -> [InstanceRow] {
        let ttlMs = ttl.inMilliseconds
        return try await run("instances") { [logger] client in
            let rows = try await client.query(
                """
                SELECT i.instance_id, i.address, i.version, i.started_at, i.heartbeat_at, i.stopped_at IS NOT NULL,
                    i.stopped_at IS NULL AND i.heartbeat_at > NOW() - \(ttlMs) * INTERVAL '1 millisecond',
                    COALESCE((SELECT string_agg(l.connector_id, ',' ORDER BY l.connector_id) FROM connector_leases l
                        WHERE l.owner = i.instance_id AND l.expires_at > NOW()), ''),
                    COALESCE((SELECT sum(l.rate) FROM connector_leases l WHERE l.owner = i.instance_id AND l.expires_at > NOW()), 0)
                FROM instances i
                WHERE i.heartbeat_at > NOW() - INTERVAL '1 day'
                ORDER BY i.started_at DESC
                """,
                logger: logger
            )
            var instances: [InstanceRow] = []
            for try await (id, address, version, started, heartbeat, stopped, alive, connectors, rate) in rows.decode(
                (String, String, String, Date, Date, Bool, Bool, String, Double).self
            ) {
                instances.append(
                    InstanceRow(
                        instanceID: id,
                        address: address,
                        version: version,
                        startedAt: started,
                        heartbeatAt: heartbeat,
                        stopped: stopped,
                        alive: alive,
                        connectors: connectors.split(separator: ",").map(String.init),
                        messagesPerSecond: rate
                    )
                )
            }
            return instances
        }
    }

    public func renewLeases(owner: String, ttl: Duration, rates: [String: Double]) async throws -> [String: HeldLease] {
        let ttlMs = ttl.inMilliseconds
        let ids = Array(rates.keys)
        let values = ids.map { rates[$0] ?? 0 }
        return try await run("renew leases") { [logger] client in
            let rows = try await client.query(
                """
                UPDATE connector_leases l SET expires_at = NOW() + \(ttlMs) * INTERVAL '1 millisecond',
                    rate = COALESCE((SELECT r.rate FROM unnest(\(ids)::text[], \(values)::float8[]) AS r(id, rate) WHERE r.id = l.connector_id), l.rate),
                    offered_to = (SELECT i.instance_id FROM instances i WHERE i.instance_id = l.offered_to AND i.stopped_at IS NULL
                        AND i.heartbeat_at > NOW() - \(ttlMs) * INTERVAL '1 millisecond')
                WHERE owner = \(owner) RETURNING connector_id, epoch, offered_to
                """,
                logger: logger
            )
            var leases: [String: HeldLease] = [:]
            for try await (id, epoch, offeredTo) in rows.decode((String, Int64, String?).self) {
                leases[id] = HeldLease(epoch: epoch, handOverTo: offeredTo)
            }
            return leases
        }
    }

    public func acquireLease(connectorID: String, owner: String, ttl: Duration) async throws -> Int64? {
        let ttlMs = ttl.inMilliseconds
        return try await run("acquire lease") { [logger] client in
            let rows = try await client.query(
                """
                INSERT INTO connector_leases (connector_id, owner, epoch, expires_at)
                SELECT \(connectorID), \(owner), 1, NOW() + \(ttlMs) * INTERVAL '1 millisecond'
                WHERE EXISTS (SELECT 1 FROM api_connectors WHERE connector_id = \(connectorID))
                ON CONFLICT (connector_id) DO UPDATE SET
                    epoch = CASE WHEN connector_leases.owner = EXCLUDED.owner THEN connector_leases.epoch ELSE connector_leases.epoch + 1 END,
                    acquired_at = CASE WHEN connector_leases.owner = EXCLUDED.owner THEN connector_leases.acquired_at ELSE NOW() END,
                    owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, offered_to = NULL
                WHERE connector_leases.owner = EXCLUDED.owner OR connector_leases.expires_at <= NOW()
                    OR (connector_leases.owner = '' AND connector_leases.offered_to = EXCLUDED.owner)
                RETURNING epoch
                """,
                logger: logger
            )
            for try await epoch in rows.decode(Int64.self) { return epoch }
            return nil
        }
    }

    public func releaseLeases(_ connectorIDs: [String], owner: String, to: String?, ttl: Duration) async throws {
        guard !connectorIDs.isEmpty else { return }
        // Reserved for `to` for one lease TTL: if it never comes, anyone takes it after that.
        let reserveMs = to == nil ? 0 : ttl.inMilliseconds
        _ = try await run("release leases") { [logger] client in
            try await client.query(
                """
                UPDATE connector_leases SET expires_at = NOW() + \(reserveMs) * INTERVAL '1 millisecond', owner = '', offered_to = \(to)
                WHERE owner = \(owner) AND connector_id = ANY(\(connectorIDs)::text[])
                """,
                logger: logger
            )
        }
    }

    public func requestHandOver(connectorID: String, owner: String, epoch: Int64, to: String) async throws -> Bool {
        try await run("request hand-over") { [logger] client in
            let rows = try await client.query(
                """
                UPDATE connector_leases SET offered_to = \(to)
                WHERE connector_id = \(connectorID) AND owner = \(owner) AND epoch = \(epoch) AND expires_at > NOW()
                RETURNING 1
                """,
                logger: logger
            )
            for try await _ in rows.decode(Int.self) { return true }
            return false
        }
    }

    public func validLeases() async throws -> [String: LeaseRow] {
        try await run("leases") { [logger] client in
            let rows = try await client.query(
                """
                SELECT connector_id, owner, epoch, rate, offered_to, (EXTRACT(EPOCH FROM NOW() - acquired_at) * 1000)::int8
                FROM connector_leases WHERE expires_at > NOW()
                """,
                logger: logger
            )
            var leases: [String: LeaseRow] = [:]
            for try await (id, owner, epoch, rate, offeredTo, heldMs) in rows.decode((String, String, Int64, Double, String?, Int64).self) {
                leases[id] = LeaseRow(owner: owner, epoch: epoch, rate: rate, offeredTo: offeredTo, heldFor: .milliseconds(max(0, heldMs)))
            }
            return leases
        }
    }

    public func markStopped(_ instanceID: String) async throws {
        _ = try await run("stop instance") { [logger] client in
            try await client.query("UPDATE instances SET stopped_at = NOW() WHERE instance_id = \(instanceID)", logger: logger)
        }
    }

    public func notify(_ payload: String) async throws {
        _ = try await run("notify") { [logger] client in
            try await client.query("SELECT pg_notify(\(Self.clusterChannel), \(payload))", logger: logger)
        }
    }

    /// The notifications are read on the pool's event loop (`EventLoopExecutor`), where their
    /// connection delivers them: one comes for every batch any instance commits, this one's too.
    public func listen(listening: @escaping @Sendable () async -> Void, _ handle: @escaping @Sendable (String) async -> Void) async throws {
        try await EventLoopExecutor.prefer(executor) {
            try await client.withConnection { connection in
                try await connection.listen(on: Self.clusterChannel) { notifications in
                    await listening()
                    for try await notification in notifications { await handle(notification.payload) }
                }
            }
        }
    }

    public func storedMessages(ids: [Int64]) async throws -> [StoredMessage] {
        guard !ids.isEmpty else { return [] }
        return try await run("relay messages") { [logger] client in
            let rows = try await client.query(
                """
                SELECT id, connector_id, session_id, source_id, data::text, (EXTRACT(EPOCH FROM timestamp) * 1000000)::int8
                FROM websocket_messages WHERE id = ANY(\(ids)::int8[]) ORDER BY id
                """,
                logger: logger
            )
            var messages: [StoredMessage] = []
            for try await (id, connector, session, source, data, micros) in rows.decode((Int64, String, String?, String?, String, Int64).self) {
                guard let message = try? SpoolRecord.marketMessage(data: data) else { continue }
                let pending = PendingMessage(
                    connectorID: connector,
                    sessionID: session ?? "",
                    sourceID: source ?? "",
                    message: message,
                    receivedAt: Date(timeIntervalSince1970: Double(micros) / 1_000_000),
                    data: data
                )
                messages.append(StoredMessage(id: id, pending: pending))
            }
            return messages
        }
    }

    public func batchMessageIDs(batchID: String) async throws -> [Int64] {
        try await run("batch ids") { [logger] client in
            let rows = try await client.query("SELECT messages::text FROM websocket_batches WHERE batch_id = \(batchID)", logger: logger)
            for try await text in rows.decode(String.self) { return Self.ids(inJSONArray: text) }
            return []
        }
    }

    public func batches(since: Date, excludingInstance: String) async throws -> [(batchID: String, ids: [Int64])] {
        try await run("recent batches") { [logger] client in
            let rows = try await client.query(
                """
                SELECT batch_id, messages::text FROM websocket_batches
                WHERE timestamp >= \(since) AND COALESCE(metrics->>'instance_id', '') <> \(excludingInstance) ORDER BY id
                """,
                logger: logger
            )
            var batches: [(batchID: String, ids: [Int64])] = []
            for try await (batchID, text) in rows.decode((String, String).self) { batches.append((batchID, Self.ids(inJSONArray: text))) }
            return batches
        }
    }

    static func ids(inJSONArray text: String) -> [Int64] {
        ((try? JSONValue.parse(text))?.arrayValue ?? []).compactMap { value in
            if case .number(let number) = value { return Int64(number) }
            return nil
        }
    }
}
