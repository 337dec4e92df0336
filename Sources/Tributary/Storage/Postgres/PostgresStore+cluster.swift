import Foundation
import PostgresNIO

extension PostgresStore: ClusterStore {
    /// The one channel instances talk on; payloads are small JSON objects (see `ClusterMessage`).
    static let clusterChannel = "tributary_cluster"

    public func heartbeat(_ instance: InstanceInfo, ttl: Duration) async throws -> [InstanceRow] {
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
                        WHERE l.owner = i.instance_id AND l.expires_at > NOW()), '')
                FROM instances i
                WHERE i.heartbeat_at > NOW() - INTERVAL '1 day'
                ORDER BY i.started_at DESC
                """,
                logger: logger
            )
            var instances: [InstanceRow] = []
            for try await (id, address, version, started, heartbeat, stopped, alive, connectors) in rows.decode(
                (String, String, String, Date, Date, Bool, Bool, String).self
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
                        connectors: connectors.split(separator: ",").map(String.init)
                    )
                )
            }
            return instances
        }
    }

    public func renewLeases(owner: String, ttl: Duration) async throws -> [String: Int64] {
        let ttlMs = ttl.inMilliseconds
        return try await run("renew leases") { [logger] client in
            let rows = try await client.query(
                """
                UPDATE connector_leases SET expires_at = NOW() + \(ttlMs) * INTERVAL '1 millisecond'
                WHERE owner = \(owner) RETURNING connector_id, epoch
                """,
                logger: logger
            )
            var leases: [String: Int64] = [:]
            for try await (id, epoch) in rows.decode((String, Int64).self) { leases[id] = epoch }
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
                    owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, acquired_at = NOW()
                WHERE connector_leases.owner = EXCLUDED.owner OR connector_leases.expires_at <= NOW()
                RETURNING epoch
                """,
                logger: logger
            )
            for try await epoch in rows.decode(Int64.self) { return epoch }
            return nil
        }
    }

    public func releaseLeases(_ connectorIDs: [String], owner: String) async throws {
        guard !connectorIDs.isEmpty else { return }
        _ = try await run("release leases") { [logger] client in
            try await client.query(
                "UPDATE connector_leases SET expires_at = NOW(), owner = '' WHERE owner = \(owner) AND connector_id = ANY(\(connectorIDs)::text[])",
                logger: logger
            )
        }
    }

    public func validLeases() async throws -> [String: String] {
        try await run("leases") { [logger] client in
            let rows = try await client.query("SELECT connector_id, owner FROM connector_leases WHERE expires_at > NOW()", logger: logger)
            var leases: [String: String] = [:]
            for try await (id, owner) in rows.decode((String, String).self) { leases[id] = owner }
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

    public func listen(listening: @escaping @Sendable () async -> Void, _ handle: @escaping @Sendable (String) async -> Void) async throws {
        try await client.withConnection { connection in
            try await connection.listen(on: Self.clusterChannel) { notifications in
                await listening()
                for try await notification in notifications { await handle(notification.payload) }
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
