import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// Several instances on one PostgreSQL, in one process (the kill -9 cases run as processes in
/// `scripts/cluster`): each connector runs on exactly one, a stopping instance hands its
/// connectors over, any instance's API acts on the owner, and realtime clients of any instance
/// get every committed update.
@Suite(.timeLimit(.minutes(4))) struct ClusterTests {
    /// A connector per instrument on the fake OKX exchange.
    static func body(port: Int, instrument: String) -> String {
        StreamingTests.okxBody(port: port, name: "okx-\(instrument.lowercased())", instruments: [instrument])
    }

    /// The instance configuration: `base`'s database, its own data directory, fast leases.
    static func instanceConfig(_ base: AppConfig, _ index: Int) -> AppConfig {
        var config = StreamingTests.fast(base)
        config.dataDirectory = base.dataDirectory + "-instance\(index)"
        config.cluster.leaseTTL = .seconds(3)
        config.cluster.renewInterval = .milliseconds(250)
        return config
    }

    /// connector id → owner instance id, from `/api/instances` of `client`.
    static func owners(_ client: some TestClientProtocol) async throws -> [String: [String]] {
        let instances = try await client.json(.get, "/api/instances").body["data"]?.arrayValue ?? []
        var owners: [String: [String]] = [:]
        for instance in instances where instance["status"] == "alive" {
            let id = instance["instance_id"]?.stringValue ?? "?"
            for connector in instance["connectors"]?.arrayValue ?? [] { owners[connector.stringValue ?? "?", default: []].append(id) }
        }
        return owners
    }

    static func selfID(_ client: some TestClientProtocol) async throws -> String {
        let instances = try await client.json(.get, "/api/instances").body["data"]?.arrayValue ?? []
        return instances.first { $0["self"] == true }?["instance_id"]?.stringValue ?? "?"
    }

    /// Creates a connector per instrument through `client` and starts each; returns their ids.
    static func createAndStart(_ client: some TestClientProtocol, port: Int, instruments: [String]) async throws -> [String] {
        var ids: [String] = []
        for instrument in instruments {
            let created = try await client.json(.post, "/api/connectors", body: body(port: port, instrument: instrument))
            let id = try #require(created.body["connector_id"]?.stringValue)
            ids.append(id)
            #expect(try await client.json(.post, "/api/connectors/\(id)/start").status == .ok)
        }
        return ids
    }

    /// Two instances on one fresh PostgreSQL database, with `exchange` running: `body` gets the
    /// exchange's port, the base configuration and a client of each instance.
    static func withTwoInstances(
        _ exchange: FakeExchange,
        _ body: @escaping @Sendable (Int, AppConfig, any TestClientProtocol, any TestClientProtocol) async throws -> Void
    ) async throws {
        try await exchange.withRunning { port in
            try await TestBackend.postgres.withConfig { base in
                defer { cleanUp(base) }
                try await TestServer(config: instanceConfig(base, 1)).run { first in
                    try await TestServer(config: instanceConfig(base, 2)).run { second in
                        try await body(port, base, first, second)
                    }
                }
            }
        }
    }

    static func cleanUp(_ base: AppConfig) {
        for index in 1...3 { try? FileManager.default.removeItem(atPath: base.dataDirectory + "-instance\(index)") }
    }

    @Test func eachConnectorRunsOnExactlyOneInstanceAndAStoppingInstanceHandsItsOnesOver() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        var options = SimulatorOptions()
        options.rate = 50
        options.instruments = (1...6).map { "C\($0)-USDT" }
        let exchange = FakeExchange(options: options)
        try await Self.withTwoInstances(exchange) { port, base, first, _ in
            let ids = try await Self.createAndStart(first, port: port, instruments: exchange.options.instruments)
            let third = try await TestServer(config: Self.instanceConfig(base, 3)).run { client in
                let third = try await Self.selfID(client)
                // Balanced by count: 2 each, each connector on exactly one instance.
                let balanced = try await eventually(timeout: .seconds(20)) {
                    let owners = try await Self.owners(first)
                    let perInstance = Dictionary(grouping: owners.values.flatMap { $0 }, by: { $0 }).mapValues(\.count)
                    return Set(owners.keys) == Set(ids) && owners.values.allSatisfy { $0.count == 1 } && perInstance.count == 3
                        && perInstance.values.allSatisfy { $0 == 2 }
                }
                let owners = try await Self.owners(first)
                #expect(balanced, "owners: \(owners)")
                // Every stream is read once: one connection per connector at the exchange. A lease
                // moves before its new owner connects, so first wait for that connection (the last
                // move's), then count: none may follow.
                #expect(try await eventually { exchange.openConnections == ids.count }, "open: \(exchange.openConnections)")
                let connections = exchange.connectionCount
                try await Task.sleep(for: .seconds(1))
                #expect(exchange.connectionCount == connections, "no connector started twice")
                let stored = try await RawDatabase.strings(
                    base,
                    "SELECT count(*)::text FROM (SELECT connector_id, source_id FROM websocket_messages GROUP BY 1, 2 HAVING count(*) > 1) d"
                )
                #expect(stored == ["0"], "no duplicate rows")
                return third
            }
            // The third stopped gracefully: its connectors move within 2 s.
            let stoppedAt = ContinuousClock.now
            let movedOver = try await eventually(timeout: .seconds(10)) {
                let owners = try await Self.owners(first)
                return Set(owners.keys) == Set(ids) && !owners.values.flatMap { $0 }.contains(third)
                    && owners.values.allSatisfy { $0.count == 1 }
            }
            let handover = ContinuousClock.now - stoppedAt
            let after = try await Self.owners(first)
            #expect(movedOver, "owners after the third stopped: \(after)")
            #expect(handover < .seconds(2), "handed over in \(handover)")
        }
    }

    /// An idle instance runs one period every `LEASE_RENEW_MS`, not back to back: the wake-up it
    /// waits on alongside the timer once ended for good when a wait on it was cancelled, and every
    /// period after the first timed-out one started at once (about 50 a second, each six queries).
    @Test func periodsFollowTheRenewIntervalWhenNothingHappens() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        try await TestBackend.postgres.withConfig { base in
            defer { Self.cleanUp(base) }
            try await TestServer(config: Self.instanceConfig(base, 1)).run { client in
                func periods() async throws -> Double {
                    let text = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
                    let line = text.split(separator: "\n").first { $0.hasPrefix("tributary_cluster_periods_total ") }
                    return try #require(line.flatMap { Double($0.split(separator: " ").last ?? "") })
                }
                // Past the start (its first periods may be woken by the connectors' start).
                try await Task.sleep(for: .seconds(1))
                let before = try await periods()
                try await Task.sleep(for: .seconds(3))
                let ran = try await periods() - before
                // 250 ms periods: 12 in 3 s; a few more allowed for a slow machine's timing.
                #expect((8...16).contains(ran), "\(ran) periods in 3 s at a 250 ms interval")
            }
        }
    }

    /// Balanced by count, then by message rate: two heavy connectors that count balancing left on
    /// one instance end up one on each (a swap with a light one), and stay there.
    @Test func connectorsAreBalancedByMessageRateAndStayPut() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        var heavyOptions = SimulatorOptions()
        heavyOptions.rate = 200
        heavyOptions.instruments = ["C1-USDT", "C2-USDT", "C3-USDT", "C4-USDT"]
        var lightOptions = heavyOptions
        lightOptions.rate = 5
        let (heavyExchange, lightExchange) = (FakeExchange(options: heavyOptions), FakeExchange(options: lightOptions))
        let instruments = heavyOptions.instruments
        try await heavyExchange.withRunning { heavyPort in
            try await lightExchange.withRunning { lightPort in
                try await TestBackend.postgres.withConfig { base in
                    defer { Self.cleanUp(base) }
                    try await TestServer(config: Self.instanceConfig(base, 1)).run { first in
                        // Four connectors on the first instance alone; when the second joins, count
                        // balancing releases the last two by id: make those the light ones, so the
                        // heavy two are left together.
                        var created: [String] = []
                        for instrument in instruments {
                            let response = try await first.json(.post, "/api/connectors", body: Self.body(port: heavyPort, instrument: instrument))
                            created.append(try #require(response.body["connector_id"]?.stringValue))
                        }
                        let ids = created.sorted()
                        let heavy = Set(ids.prefix(2))
                        for (id, instrument) in zip(ids.suffix(2), instruments.suffix(2)) {
                            let light = StreamingTests.okxBody(port: lightPort, name: "light-\(id)", instruments: [instrument])
                            #expect(try await first.json(.put, "/api/connectors/\(id)", body: light).status == .ok)
                        }
                        for id in ids { #expect(try await first.json(.post, "/api/connectors/\(id)/start").status == .ok) }
                        let allOnFirst = try await eventually(timeout: .seconds(10)) { try await Self.owners(first).count == 4 }
                        #expect(allOnFirst)
                        try await TestServer(config: Self.instanceConfig(base, 2)).run { second in
                            let secondID = try await Self.selfID(second)
                            func heavyPerInstance() async throws -> [String: Int] {
                                let owners = try await Self.owners(first)
                                guard Set(owners.keys) == Set(ids), owners.values.allSatisfy({ $0.count == 1 }) else { return [:] }
                                return Dictionary(grouping: heavy.compactMap { owners[$0]?.first }, by: { $0 }).mapValues(\.count)
                            }
                            // Count balancing first: the two light ones move, the heavy ones stay together.
                            let countBalanced = try await eventually(timeout: .seconds(10)) {
                                try await Self.owners(first).values.flatMap { $0 }.filter { $0 == secondID }.count == 2
                            }
                            #expect(countBalanced)
                            // Then by rate: one heavy on each instance, two connectors each.
                            let rateBalanced = try await eventually(timeout: .seconds(30)) {
                                let perInstance = try await heavyPerInstance()
                                return perInstance.count == 2 && perInstance.values.allSatisfy { $0 == 1 }
                            }
                            let owners = try await Self.owners(first)
                            #expect(rateBalanced, "heavy: \(heavy), owners: \(owners)")
                            let counts = Dictionary(grouping: owners.values.flatMap { $0 }, by: { $0 }).mapValues(\.count)
                            #expect(counts.values.sorted() == [2, 2], "still balanced by count: \(counts)")
                            // And nothing moves after that (hysteresis), over more than a settle time.
                            // A moved connector connects after its lease is taken: count from when all four are connected.
                            let connected = try await eventually(timeout: .seconds(10)) {
                                heavyExchange.openConnections + lightExchange.openConnections == 4
                            }
                            #expect(connected, "open connections: \(heavyExchange.openConnections + lightExchange.openConnections)")
                            let connections = heavyExchange.connectionCount + lightExchange.connectionCount
                            try await Task.sleep(for: .seconds(5))
                            #expect(try await Self.owners(first) == owners, "no further moves")
                            #expect(heavyExchange.connectionCount + lightExchange.connectionCount == connections, "no reconnection")
                            let rates =
                                try await first.json(.get, "/api/instances").body["data"]?.arrayValue?
                                .filter { $0["status"] == "alive" }.compactMap { $0["messages_per_second"]?.text.flatMap(Double.init) } ?? []
                            #expect(rates.count == 2 && rates.allSatisfy { $0 > 150 && $0 < 260 }, "loads: \(rates)")
                        }
                    }
                }
            }
        }
    }

    @Test func anyInstanceStopsAndStartsAConnectorOnItsOwnerAndRealtimeIsCompleteEverywhere() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        var options = SimulatorOptions()
        options.rate = 100
        options.total = 400
        options.instruments = ["C1-USDT", "C2-USDT"]
        let exchange = FakeExchange(options: options)
        try await Self.withTwoInstances(exchange) { port, base, first, second in
            let listeners = [try await RealtimeListener(port: first.port!), try await RealtimeListener(port: second.port!)]
            defer { for listener in listeners { listener.close() } }
            let ids = try await Self.createAndStart(first, port: port, instruments: exchange.options.instruments)
            // Realtime: each instance's client gets every committed update once, whichever instance stored it.
            for (index, listener) in listeners.enumerated() {
                let updates = try await listener.waitForUpdates(400, timeout: .seconds(30))
                let rowIDs = updates.compactMap { $0["id"]?.text }
                #expect(rowIDs.count == 400 && Set(rowIDs).count == 400, "instance \(index + 1): \(rowIDs.count) updates")
            }
            let owners = try await Self.owners(first)
            #expect(Set(owners.keys) == Set(ids) && owners.values.allSatisfy { $0.count == 1 })
            #expect(Set(owners.values.flatMap { $0 }).count == 2, "one connector on each instance: \(owners)")

            // Stop through the instance that does not own it: the owner stops it.
            let firstID = try await Self.selfID(first)
            let notOwnedByFirst = try #require(ids.first { owners[$0] != [firstID] })
            #expect(try await first.json(.post, "/api/connectors/\(notOwnedByFirst)/stop").status == .ok)
            let stopped = try await eventually(timeout: .seconds(5)) {
                let owned = try await Self.owners(second)[notOwnedByFirst] != nil
                let status = try await second.json(.get, "/api/connectors/\(notOwnedByFirst)").body["data"]?["status"]
                return !owned && status == "stopped"
            }
            #expect(stopped, "stopped on its owner")
            // And start it again through the other: it runs on exactly one instance.
            #expect(try await second.json(.post, "/api/connectors/\(notOwnedByFirst)/start").status == .ok)
            let restarted = try await eventually(timeout: .seconds(5)) {
                try await Self.owners(first)[notOwnedByFirst]?.count == 1
            }
            #expect(restarted)
        }
    }

    /// When an instance's listening connection is cut, it reconnects and reads back the batches
    /// committed meanwhile: its realtime clients still get every update, once.
    @Test func realtimeGapsAreClosedAfterTheListenerReconnects() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        var options = SimulatorOptions()
        options.rate = 150
        options.total = 600
        options.instruments = ["C1-USDT"]
        let exchange = FakeExchange(options: options)
        try await Self.withTwoInstances(exchange) { port, base, first, second in
            let listeners = [try await RealtimeListener(port: first.port!), try await RealtimeListener(port: second.port!)]
            defer { for listener in listeners { listener.close() } }
            let ids = try await Self.createAndStart(first, port: port, instruments: exchange.options.instruments)
            let owned = try await eventually(timeout: .seconds(10)) { try await Self.owners(first)[ids[0]] != nil }
            #expect(owned)
            // The client of the instance where the connector does not run.
            let owner = try await Self.owners(first)[ids[0]]?.first
            let listener = try await Self.selfID(first) == owner ? listeners[1] : listeners[0]
            // Cut every LISTEN connection twice while trades flow.
            for _ in 0..<2 {
                try await Task.sleep(for: .milliseconds(800))
                _ = try await RawDatabase.strings(
                    base,
                    "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                )
            }
            let stored = try await eventually(timeout: .seconds(20)) { try await StreamingTests.count(base, ids[0]) == 600 }
            #expect(stored)
            let updates = try await listener.waitForUpdates(600, timeout: .seconds(20))
            let rowIDs = updates.compactMap { $0["id"]?.text }
            #expect(rowIDs.count == 600, "updates at the other instance: \(rowIDs.count)")
            #expect(Set(rowIDs).count == rowIDs.count, "none twice")
        }
    }

    /// A coordinator's period reads the desired states, then starts what it holds a lease for.
    /// A stop through the API in between (its row written after that read) must win: the
    /// supervisor does not start a connector stopped after the period noted its stop count.
    @Test func aStopAfterAPeriodReadTheDesiredStatesIsNotUndoneByIt() async throws {
        try await TestBackend.sqlite.withConfig { config in
            let logger = Logger(label: "test")
            try await Tributary.withStore(config, logger: logger) { store in
                try await store.migrate()
                let secretBox = SecretBox(current: try EncryptionKey(base64: TestBackend.testKey))
                let metrics = PipelineMetrics()
                let supervisor = ConnectorSupervisor(
                    store: store,
                    definition: { try ConnectorDefinition(record: $0, secretBox: secretBox) },
                    buffer: IngestBuffer(capacity: 100),
                    pollRows: PollRows(spool: nil, store: store, metrics: metrics, logger: logger),
                    metrics: metrics,
                    settings: config.runtime,
                    logger: logger
                )
                let service = ConnectorService(store: store, secretBox: secretBox, supervisor: supervisor, logger: logger)
                let id = try await service.create(try JSONValue.parse(connectorBody("raced"))).connectorID
                var running = try #require(try await store.connector(id: id))
                running.desiredState = .running
                var stopped = running
                stopped.desiredState = .stopped
                await supervisor.apply(stopped)

                let noted = await supervisor.noteStops()
                await supervisor.apply(stopped)  // the API's stop, after the period's read
                await supervisor.run(running, lease: 1, unlessStoppedAfter: noted)
                #expect(await supervisor.runningIDs.isEmpty, "the stale read does not restart it")

                // The next period reads the desired states again; a start then is a real one.
                let next = await supervisor.noteStops()
                await supervisor.run(running, lease: 2, unlessStoppedAfter: next)
                #expect(await supervisor.runningIDs == [id])
                await supervisor.apply(stopped)
                #expect(await supervisor.runningIDs.isEmpty)
            }
        }
    }

    /// A write under an epoch that is no longer the instance's is fenced: rows without an exchange
    /// identity are refused, trades (which the unique index deduplicates) are kept.
    @Test func writesFromAStaleLeaseAreFenced() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        try await TestBackend.postgres.withConfig { base in
            guard case .postgres(let settings) = base.database else { return }
            let logger = Logger(label: "test")
            func store(_ instance: String) -> PostgresStore {
                PostgresStore(settings: settings, poolMaximum: 2, timeout: .seconds(5), instanceID: instance, logger: logger)
            }
            let (old, new) = (store("inst_old"), store("inst_new"))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await old.run() }
                group.addTask { try await new.run() }
                defer { group.cancelAll() }
                try await old.migrate()
                let service = ConnectorService(
                    store: old,
                    secretBox: SecretBox(current: try EncryptionKey(base64: TestBackend.testKey)),
                    logger: logger
                )
                let id = try await service.create(try JSONValue.parse(connectorBody("fenced", ["api_url": "wss://ws.okx.com:8443/ws/v5/public"])))
                    .connectorID
                let first = try #require(try await old.acquireLease(connectorID: id, owner: "inst_old", ttl: .seconds(30)))
                #expect(try await new.acquireLease(connectorID: id, owner: "inst_new", ttl: .seconds(30)) == nil, "held by the old owner")
                try await old.releaseLeases([id], owner: "inst_old", to: nil, ttl: .seconds(30))
                let second = try #require(try await new.acquireLease(connectorID: id, owner: "inst_new", ttl: .seconds(30)))
                #expect(second == first + 1, "a new owner, a new epoch")

                func message(_ n: Int, identity: Bool, lease: Int64) -> PendingMessage {
                    var market = MarketMessage(
                        exchange: .okx,
                        channel: identity ? "trades" : "tickers",
                        messageType: identity ? .trade : .ticker,
                        instrument: "BTC-USDT",
                        price: "100.\(n)",
                        quantity: "1",
                        raw: .null
                    )
                    if identity { market.sourceID = "okx:trades:BTC-USDT:\(n)" }
                    return PendingMessage(
                        connectorID: id,
                        sessionID: "ws_x",
                        sourceID: market.sourceID ?? "ws_x:\(n)",
                        message: market,
                        receivedAt: Date(),
                        lease: lease
                    )
                }
                let batch = { BatchRecord(batchID: UUID().uuidString, connectorID: id, metrics: [:]) }
                // The old owner, still writing under its old epoch.
                let stale = try await old.insertMessages(
                    [message(1, identity: false, lease: first), message(2, identity: true, lease: first)],
                    batch: batch()
                )
                #expect(stale[0] == nil, "a ticker from the stale epoch is refused")
                #expect(stale[1] != nil, "a trade is kept (its identity deduplicates it)")
                #expect(old.fencedMessages.load(ordering: .relaxed) == 1)
                // The new owner writes normally.
                let current = try await new.insertMessages([message(3, identity: false, lease: second)], batch: batch())
                #expect(current[0] != nil)
                #expect(new.fencedMessages.load(ordering: .relaxed) == 0)

                // A hand-over to a named instance: reserved for it, not for anyone else.
                #expect(try await old.requestHandOver(connectorID: id, owner: "inst_new", epoch: second, to: "inst_old"))
                #expect(try await old.requestHandOver(connectorID: id, owner: "inst_new", epoch: first, to: "inst_old") == false, "a stale epoch")
                try await new.releaseLeases([id], owner: "inst_new", to: "inst_old", ttl: .seconds(30))
                #expect(try await old.validLeases()[id]?.offeredTo == "inst_old")
                #expect(try await old.acquireLease(connectorID: id, owner: "inst_third", ttl: .seconds(30)) == nil, "reserved for another")
                #expect(try await old.acquireLease(connectorID: id, owner: "inst_old", ttl: .seconds(30)) == second + 1)
                #expect(try await old.validLeases()[id].map { ($0.owner, $0.offeredTo) } ?? ("?", "?") == ("inst_old", nil))
            }
        }
    }

    /// Each batch an instance commits comes back to its own listener; those are skipped before
    /// they are parsed, and nothing else is.
    @Test func anInstanceTellsItsOwnCommitsFromEveryOtherAnnouncement() throws {
        let me = "host-1/\"quoted\""
        let own = ClusterMessage.OwnCommits(instanceID: me)
        #expect(own.match(ClusterMessage.committed(batchID: "b1", ids: [1, 2, 3], from: me)))
        #expect(own.match(ClusterMessage.committed(batchID: "b2", ids: Array(1...2_000), from: me)))
        #expect(ClusterMessage(parsing: ClusterMessage.committed(batchID: "b2", ids: Array(1...2_000), from: me)) == .batch("b2", from: me))
        // Another instance's batches, this instance's control and lease announcements.
        #expect(!own.match(ClusterMessage.committed(batchID: "b3", ids: [4], from: "host-2")))
        #expect(!own.match(ClusterMessage.committed(batchID: "b4", ids: [4], from: "host-1")))
        #expect(!own.match(ClusterMessage.control("c1", from: me)))
        #expect(!own.match(ClusterMessage.leases(from: me)))
        // An id that holds this instance's marker inside a value is not its sender.
        #expect(!own.match(ClusterMessage.committed(batchID: #""i":"host-1/\"quoted\"""#, ids: [5], from: "host-2")))
    }
}
