import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Lease settings of an instance among several on one PostgreSQL.
public struct ClusterSettings: Sendable {
    /// A lease not renewed for this long is free for another instance to take (`LEASE_TTL_MS`).
    public var leaseTTL: Duration = .seconds(10)
    /// How often leases are renewed and the connectors rebalanced (`LEASE_RENEW_MS`).
    public var renewInterval: Duration = .seconds(2)

    public init() {}
}

/// Runs this instance's share of the connectors when several Tributary instances share one
/// PostgreSQL. PostgreSQL is the coordinator; there is no consensus of our own:
/// - **Leases.** A `connector_leases` row per running connector names its owner and an epoch and
///   expires unless renewed (every `renewInterval`). Only the owner runs the connector. Every
///   message carries the epoch it was received under, and the store refuses a write from an
///   epoch that is no longer the owner's (fencing; see `PostgresStore.insertMessages`).
/// - **Balance.** Each period every instance heartbeats in `instances`, renews its leases, stops
///   what it no longer owns or nobody wants running, releases what is over its share
///   (`ceil(running / live instances)`), and takes free connectors up to its share. Releasing
///   only above the share and taking only free connectors keeps it from flapping.
/// - **Changes.** An API change anywhere is written to the database and announced on the cluster
///   channel (`NOTIFY`); every instance wakes and the owner applies it. The period reconciles
///   anything a lost notification missed.
/// - **Realtime.** Each committed batch is announced with its row ids (or its batch id when too
///   many); other instances read those rows and send them to their realtime clients. After the
///   listening connection is lost, batches committed meanwhile are read back from
///   `websocket_batches`.
/// - **Failover.** A killed instance's leases expire after `leaseTTL` and are taken at the next
///   period; a stopping instance releases them once its connectors have stopped and its messages
///   are written, and says so, so others take them at once.
public actor ClusterCoordinator: Service, ConnectorPlacement {
    let instance: InstanceInfo
    let store: any ClusterStore & ConnectorRepository & SchemaMigrations
    let supervisor: ConnectorSupervisor
    let broadcaster: Broadcaster
    let settings: ClusterSettings
    let logger: Logger
    /// Connector id → the epoch of this instance's lease.
    var owned: [String: Int64] = [:]
    /// Batches already sent to realtime clients from another instance (bounded).
    var relayed = RecentSet(capacity: 20_000)
    /// Connector id → its smoothed message rate (per second), for the leases it holds.
    var rates: [String: Double] = [:]
    /// Connector id → its received counter when last measured.
    var counted: [String: (received: Int, at: ContinuousClock.Instant)] = [:]
    /// When a notification was last heard (to close a gap after the listener reconnects).
    var lastHeard: Date?
    /// Wakes the period loop early (a kept signal, so one sent while a period runs is not lost).
    /// Not an `AsyncStream`: cancelling a wait on one ends the stream, and every later wait then
    /// returned at once, so periods ran back to back (about 50 a second) instead of one per
    /// `renewInterval`.
    let wakeUps = SignalledQueue<Bool>(capacity: 1, overflow: .dropOldest)

    public init(
        instance: InstanceInfo,
        store: any ClusterStore & ConnectorRepository & SchemaMigrations,
        supervisor: ConnectorSupervisor,
        broadcaster: Broadcaster,
        settings: ClusterSettings,
        logger: Logger
    ) {
        self.instance = instance
        self.store = store
        self.supervisor = supervisor
        self.broadcaster = broadcaster
        self.settings = settings
        var logger = logger
        logger[metadataKey: "instance_id"] = "\(instance.instanceID)"
        self.logger = logger
    }

    /// Every registered instance (for `GET /api/instances`).
    func instances() async throws -> [InstanceRow] { try await store.instances(ttl: settings.leaseTTL) }

    nonisolated func wakeUp() { wakeUps.append(contentsOf: CollectionOfOne(true)) }

    public nonisolated func changed(_ connectorID: String) async {
        // This instance reacts at once; the others when the notification reaches them.
        wakeUp()
        do {
            try await store.notify(ClusterMessage.control(connectorID, from: instance.instanceID))
        } catch {
            // The next period reconciles it.
            wakeUp()
        }
    }

    public func run() async throws {
        let listener = Task { await self.listen() }
        var first = true
        var lastSuccess = ContinuousClock.now
        // Whether the last period reached the database (else there is no handing over at shutdown).
        var reachable = false
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                let isFirst = first
                // A period waiting on an unreachable database must not hold up a shutdown.
                try await cancelWhenGracefulShutdown { try await self.tick(first: isFirst) }
                lastSuccess = .now
                reachable = true
            } catch {
                // A period cut short by the shutdown says nothing about the database.
                if Task.isShuttingDownGracefully { break }
                reachable = false
                if first, await supervisor.runningIDs.isEmpty {
                    // The database is down at start: run what this instance ran last (the snapshot), spooling.
                    let started = await supervisor.startFromSnapshot()
                    if started > 0 {
                        logger.warning(
                            "database unavailable at start: started the connectors this instance held (snapshot); what they receive is spooled",
                            metadata: ["count": "\(started)"]
                        )
                    }
                }
                if ContinuousClock.now - lastSuccess > settings.leaseTTL {
                    logger.warning(
                        "cannot reach the database to renew leases: connectors keep running and spool; another instance may take them over",
                        metadata: ["error": "\(error)"]
                    )
                    lastSuccess = .now
                }
            }
            first = false
            await waitForWakeUp(settings.renewInterval)
        }
        listener.cancel()
        if reachable {
            await handOver()
        } else {
            logger.notice("stopping without the database: this instance's leases expire after the lease TTL")
        }
    }

    /// Sleeps `interval` or until a notification wakes it; returns early on shutdown.
    func waitForWakeUp(_ interval: Duration) async {
        let wakeUps = self.wakeUps
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: interval) }
            group.addTask { _ = await wakeUps.take() }
            group.addTask { try? await gracefulShutdown() }
            await group.next()
            group.cancelAll()
        }
    }

    /// One period: heartbeat, renew, reconcile with the desired states, balance by count, then by rate.
    func tick(first: Bool) async throws {
        let me = instance.instanceID
        try await store.checkReady()
        let live = try await store.heartbeat(instance, ttl: settings.leaseTTL)
        let held = try await store.renewLeases(owner: me, ttl: settings.leaseTTL, rates: rates.filter { owned[$0.key] != nil })
        // Before the desired states are read: a stop asked for after this is not in them.
        let stopsNoted = await supervisor.noteStops()
        let all = try await store.runningConnectors()
        if first, !supervisor.demoMode { try await supervisor.leaveStopped(demos: all.filter(\.demo)) }
        let wanted = Dictionary(all.filter { !$0.demo || supervisor.demoMode }.map { ($0.connectorID, $0) }, uniquingKeysWith: { a, _ in a })
        let liveIDs = Set(live.map(\.instanceID))
        let here = await supervisor.runningIDs
        var release: [String] = []
        // Connector id → the instance it is handed to (asked for by a rate balance).
        var handOvers: [String: String] = [:]
        // What runs here without a lease (lost to another instance, or a snapshot start) stops.
        for id in here where held[id] == nil {
            await supervisor.stopHere(id)
            logger.warning("lease lost: connector stopped here", metadata: ["connector_id": "\(id)"])
        }
        var mine: [String: Int64] = [:]
        for (id, lease) in held {
            if let to = lease.handOverTo, wanted[id] != nil {
                await supervisor.stopHere(id)
                handOvers[id] = to
            } else if let record = wanted[id] {
                mine[id] = lease.epoch
                await ensureRunning(record, lease: lease.epoch, stopsNoted: stopsNoted)
            } else {
                await supervisor.stopHere(id)
                release.append(id)
            }
        }
        let share = (wanted.count + max(1, live.count) - 1) / max(1, live.count)
        if mine.count > share {
            // Over the share (an instance joined): hand over the newest-named ones.
            for id in mine.keys.sorted().suffix(mine.count - share) {
                await supervisor.stopHere(id)
                mine[id] = nil
                release.append(id)
            }
        }
        if !release.isEmpty {
            try await store.releaseLeases(release, owner: me, to: nil, ttl: settings.leaseTTL)
            logger.info("released connectors", metadata: ["connectors": "\(release.sorted().joined(separator: ","))"])
        }
        for (to, ids) in Dictionary(grouping: handOvers.keys, by: { handOvers[$0] ?? "" }) {
            try await store.releaseLeases(ids, owner: me, to: to, ttl: settings.leaseTTL)
            logger.info(
                "handed connectors over to balance message rates",
                metadata: ["connectors": "\(ids.sorted().joined(separator: ","))", "to": "\(to)"]
            )
        }
        if !release.isEmpty || !handOvers.isEmpty { try await store.notify(ClusterMessage.leases(from: me)) }
        let leased = try await store.validLeases()
        var took = false
        // What another instance handed to this one (a rate balance), then free ones up to the share.
        let offered = wanted.values.filter { leased[$0.connectorID]?.owner == "" && leased[$0.connectorID]?.offeredTo == me }
        let free = wanted.values.filter { leased[$0.connectorID] == nil && mine[$0.connectorID] == nil }
            // Start from a different place on each instance, so instances do not all contend for the same ones.
            .sorted { fnv1a(me + $0.connectorID) < fnv1a(me + $1.connectorID) }
        for record in offered + free {
            let isOffer = leased[record.connectorID] != nil
            guard mine.count < share || (isOffer && mine.count <= share) else { continue }
            guard let epoch = try await store.acquireLease(connectorID: record.connectorID, owner: me, ttl: settings.leaseTTL) else { continue }
            mine[record.connectorID] = epoch
            took = true
            await ensureRunning(record, lease: epoch, stopsNoted: stopsNoted)
            logger.info("lease taken", metadata: ["connector_id": "\(record.connectorID)", "epoch": "\(epoch)"])
        }
        owned = mine
        await measureRates(seeds: leased)
        // Balance by rate only in a calm period: nothing moved here and nothing in flight anywhere.
        if release.isEmpty, handOvers.isEmpty, !took {
            try await balanceRates(wanted: Set(wanted.keys), live: liveIDs, leases: leased)
        }
    }

    /// Updates the smoothed message rate of each connector this instance holds from its
    /// received counter (a connector just taken starts from the rate its last owner recorded).
    func measureRates(seeds: [String: LeaseRow]) async {
        let now = ContinuousClock.now
        // Smoothed over about five periods, whatever the time between two periods.
        let smoothing = (settings.renewInterval * 5).inSeconds
        for id in owned.keys {
            guard let received = await supervisor.state(of: id)?.counters.received.load(ordering: .relaxed) else { continue }
            defer { counted[id] = (received, now) }
            guard let last = counted[id], received >= last.received, now > last.at else {
                if rates[id] == nil, let seed = seeds[id]?.rate, seed.isFinite, seed >= 0 { rates[id] = seed }
                continue
            }
            let seconds = (now - last.at).inSeconds
            let instant = Double(received - last.received) / seconds
            let weight = 1 - exp(-seconds / smoothing)
            rates[id] = (rates[id] ?? instant) * (1 - weight) + instant * weight
        }
        rates = rates.filter { owned[$0.key] != nil }
        counted = counted.filter { owned[$0.key] != nil }
    }

    /// Balance by message rate, within the balance by count: the instance with the highest load
    /// (the sum of its connectors' rates) moves one connector to the instance with the lowest, or
    /// swaps one with it, when that at least halves the difference between the two and the
    /// difference is above `RateBalance.minimumGap` and a quarter of its load. Only connectors
    /// held for `RateBalance.settlePeriods` periods move, so rates are measured and nothing flaps.
    /// A swap asks the other instance to hand its connector over (it sees that when renewing).
    func balanceRates(wanted: Set<String>, live: Set<String>, leases: [String: LeaseRow]) async throws {
        let me = instance.instanceID
        guard live.count > 1, live.contains(me) else { return }
        var members: [String: [(id: String, lease: LeaseRow)]] = Dictionary(uniqueKeysWithValues: live.map { ($0, []) })
        for id in wanted {
            // Something free or in flight: the count balance is not done yet.
            guard let lease = leases[id], lease.offeredTo == nil, live.contains(lease.owner) else { return }
            members[lease.owner, default: []].append((id, lease))
        }
        guard let plan = RateBalance.plan(me: me, members: members, settle: settings.renewInterval * RateBalance.settlePeriods) else { return }
        if let back = plan.back {
            guard let lease = leases[back], try await store.requestHandOver(connectorID: back, owner: plan.to, epoch: lease.epoch, to: me) else {
                return
            }
        }
        await supervisor.stopHere(plan.give)
        owned[plan.give] = nil
        try await store.releaseLeases([plan.give], owner: me, to: plan.to, ttl: settings.leaseTTL)
        try await store.notify(ClusterMessage.leases(from: me))
        logger.info(
            "balancing message rates",
            metadata: [
                "connector_id": "\(plan.give)", "to": "\(plan.to)", "in_exchange_for": "\(plan.back ?? "-")",
                "load_msg_s": "\(Int(plan.load))", "other_load_msg_s": "\(Int(plan.otherLoad))",
            ]
        )
    }

    /// Starts `record` here unless it already runs with this configuration and lease since the
    /// last start or restart action (which sets `started_at`), or was stopped through the API
    /// since `stopsNoted` (the supervisor's count before `record` was read).
    func ensureRunning(_ record: ConnectorRecord, lease epoch: Int64, stopsNoted: UInt64) async {
        if let current = await supervisor.record(of: record.connectorID), current.lease == epoch, current.config == record.config,
            current.sealedSecrets == record.sealedSecrets, current.status.startedAt == record.status.startedAt
        {
            return
        }
        await supervisor.run(record, lease: epoch, unlessStoppedAfter: stopsNoted)
    }

    /// At shutdown, once the connectors have stopped and their messages are written (this service
    /// stops after the supervisor and the writer): let the leases go at once and say so.
    func handOver() async {
        let me = instance.instanceID
        let leases = Array(owned.keys)
        let (store, ttl) = (self.store, settings.leaseTTL)
        do {
            // Bounded: with the database away, the leases simply expire (a stop must not wait on it).
            try await withDeadline(.seconds(2), "hand over leases") {
                try await store.releaseLeases(leases, owner: me, to: nil, ttl: ttl)
                try await store.markStopped(me)
                try await store.notify(ClusterMessage.leases(from: me))
            }
            logger.info("leases handed over", metadata: ["count": "\(leases.count)"])
        } catch {
            logger.warning("could not hand over leases; they expire after the lease TTL", metadata: ["error": "\(error)"])
        }
    }

    /// Listens on the cluster channel until cancelled, reconnecting after a failure and then
    /// reading back the batches it may have missed.
    func listen() async {
        var delay = Duration.milliseconds(100)
        var reconnecting = false
        while !Task.isCancelled {
            do {
                // The gap is read once LISTEN is back, so nothing committed in between is missed
                // (what is both read and heard is relayed once: by batch id).
                let closing = reconnecting
                let own = ClusterMessage.OwnCommits(instanceID: instance.instanceID)
                try await store.listen(
                    listening: { if closing { await self.closeGap() } },
                    { payload in
                        // This instance's own batches, heard back once each: skipped here,
                        // unparsed and without a hop to the coordinator.
                        if own.match(payload) { return }
                        await self.received(payload)
                    }
                )
            } catch {
                if Task.isCancelled { return }
                logger.warning("cluster listener lost its connection; reconnecting", metadata: ["error": "\(error)"])
            }
            reconnecting = true
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(2))
        }
    }

    func received(_ payload: String) async {
        lastHeard = Date()
        guard let message = ClusterMessage(parsing: payload) else { return }
        switch message {
        case .control, .leases:
            wakeUp()
        case .rows(let batchID, let ids, let from):
            guard from != instance.instanceID, relayed.insert(batchID) else { return }
            await relay(ids: ids)
        case .batch(let batchID, let from):
            guard from != instance.instanceID, relayed.insert(batchID) else { return }
            await relay(ids: (try? await store.batchMessageIDs(batchID: batchID)) ?? [])
        }
    }

    func relay(ids: [Int64]) async {
        // Reading the rows back costs a query and a parse per batch: only for clients to send them to.
        guard broadcaster.clientCount > 0 else { return }
        do {
            let messages = try await store.storedMessages(ids: ids)
            if !messages.isEmpty { broadcaster.publish(messages) }
        } catch {
            logger.warning("could not read another instance's batch for realtime clients", metadata: ["error": "\(error)"])
        }
    }

    /// After the listener reconnects: batches other instances committed since shortly before
    /// the last notification heard, not relayed yet.
    func closeGap() async {
        let since = (lastHeard ?? Date()).addingTimeInterval(-5)
        guard let batches = try? await store.batches(since: since, excludingInstance: instance.instanceID) else { return }
        for batch in batches where relayed.insert(batch.batchID) {
            await relay(ids: batch.ids)
        }
    }
}

/// The choice of a balance by message rate (see `ClusterCoordinator.balanceRates`).
struct RateBalance: Equatable {
    /// The connector this instance gives away, to whom, and what it takes back (a swap).
    var give: String
    var to: String
    var back: String?
    /// The two loads before the move (messages per second).
    var load: Double
    var otherLoad: Double

    /// Below this difference of load (messages per second) no connector moves.
    static let minimumGap = 50.0
    /// How many periods a connector must have been held before it moves again.
    static let settlePeriods = 10

    /// `members`: each live instance's leases. Nil unless `me` has the highest load and a move
    /// to the instance with the lowest at least halves their difference.
    static func plan(me: String, members: [String: [(id: String, lease: LeaseRow)]], settle: Duration) -> RateBalance? {
        func load(_ instance: String) -> Double { members[instance, default: []].reduce(0) { $0 + max(0, $1.lease.rate) } }
        let byLoad = members.keys.sorted { (load($0), $0) < (load($1), $1) }
        guard byLoad.count > 1, byLoad.last == me, let other = byLoad.first else { return nil }
        let gap = load(me) - load(other)
        guard gap > max(minimumGap, load(me) / 4) else { return nil }
        let total = members.values.reduce(0) { $0 + $1.count }
        let (low, high) = (total / members.count, (total + members.count - 1) / members.count)
        let mine = members[me, default: []].filter { $0.lease.heldFor >= settle }
        let theirs = members[other, default: []].filter { $0.lease.heldFor >= settle }
        // A single move only within the balance by count; a swap keeps both counts.
        let canMove = members[me, default: []].count - 1 >= low && members[other, default: []].count + 1 <= high
        var best: (remaining: Double, give: String, back: String?)?
        for give in mine {
            var options: [(String?, Double)] = canMove ? [(nil, 0)] : []
            options += theirs.map { ($0.id, max(0, $0.lease.rate)) }
            for (back, backRate) in options {
                let moved = max(0, give.lease.rate) - backRate
                guard moved > 0 else { continue }
                let remaining = abs(gap - 2 * moved)
                if remaining <= gap / 2, remaining < best?.remaining ?? .infinity { best = (remaining, give.id, back) }
            }
        }
        guard let best else { return nil }
        return RateBalance(give: best.give, to: other, back: best.back, load: load(me), otherLoad: load(other))
    }
}

/// The payloads of the cluster channel: small JSON objects.
enum ClusterMessage: Equatable {
    case control(String)
    case leases
    case rows(batchID: String, ids: [Int64], from: String)
    case batch(String, from: String)

    /// PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more.
    static let maxPayload = 7_900

    static func control(_ connectorID: String, from: String) -> String {
        JSONValue.object(["k": "control", "c": .string(connectorID), "i": .string(from)]).serialized
    }

    static func leases(from: String) -> String { JSONValue.object(["k": "leases", "i": .string(from)]).serialized }

    /// A committed batch: its ids when they fit, else its batch id.
    static func committed(batchID: String, ids: [Int64], from: String) -> String {
        let rows = JSONValue.object([
            "k": "rows", "b": .string(batchID), "i": .string(from), "ids": .array(ids.map { .number(String($0)) }),
        ]).serialized
        if rows.utf8.count < maxPayload { return rows }
        return JSONValue.object(["k": "batch", "b": .string(batchID), "i": .string(from)]).serialized
    }

    /// Tells this instance's own `rows` and `batch` announcements (which `received` ignores) by
    /// their bytes: one comes back for every batch the instance commits.
    struct OwnCommits: Sendable {
        /// `"i":"<instance id>"`, as the serializer writes it. A `"` inside a string is escaped,
        /// so these bytes occur only as the sender field, never inside another value.
        let sender: [UInt8]
        static let kinds = [Array(#""k":"rows""#.utf8), Array(#""k":"batch""#.utf8)]

        init(instanceID: String) {
            sender = Array(#""i":"#.utf8) + Array(JSONValue.string(instanceID).serialized.utf8)
        }

        func match(_ payload: String) -> Bool {
            var payload = payload
            return payload.withUTF8 { bytes in
                Self.find(sender, in: bytes) && Self.kinds.contains { Self.find($0, in: bytes) }
            }
        }

        /// A plain scan: with the standard library's generic `firstRange(of:)` this check was 2 %
        /// of the server's `perf` samples at 1,000 msg/s (about 13 µs a payload, worked out from
        /// that share of 0.135 cores and some 195 payloads a second).
        static func find(_ needle: [UInt8], in bytes: UnsafeBufferPointer<UInt8>) -> Bool {
            needle.withUnsafeBufferPointer { needle in
                guard let first = needle.first, let start = bytes.baseAddress, let wanted = needle.baseAddress, needle.count <= bytes.count
                else { return false }
                for offset in 0...(bytes.count - needle.count) where bytes[offset] == first {
                    if memcmp(start + offset, wanted, needle.count) == 0 { return true }
                }
                return false
            }
        }
    }

    init?(parsing payload: String) {
        guard let value = try? JSONValue.parse(payload), let kind = value["k"]?.stringValue else { return nil }
        let from = value["i"]?.stringValue ?? ""
        switch kind {
        case "control":
            guard let id = value["c"]?.stringValue else { return nil }
            self = .control(id)
        case "leases":
            self = .leases
        case "rows":
            guard let batchID = value["b"]?.stringValue, let ids = value["ids"]?.arrayValue else { return nil }
            self = .rows(batchID: batchID, ids: ids.compactMap { if case .number(let text) = $0 { Int64(text) } else { nil } }, from: from)
        case "batch":
            guard let batchID = value["b"]?.stringValue else { return nil }
            self = .batch(batchID, from: from)
        default:
            return nil
        }
    }
}

/// The most recent `capacity` strings, for "seen already?" checks.
struct RecentSet: Sendable {
    let capacity: Int
    var members: Set<String> = []
    var order: [String] = []
    var next = 0

    init(capacity: Int) { self.capacity = capacity }

    /// Adds `member`; false when it was there already.
    mutating func insert(_ member: String) -> Bool {
        guard members.insert(member).inserted else { return false }
        if order.count < capacity {
            order.append(member)
        } else {
            members.remove(order[next])
            order[next] = member
            next = (next + 1) % capacity
        }
        return true
    }
}
