import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// End to end through real sockets: fake exchange → connector → pipeline → database → realtime client.
@Suite(.timeLimit(.minutes(3))) struct StreamingTests {
    /// A test configuration with the runtime's timers scaled down.
    static func fast(_ config: AppConfig) -> AppConfig {
        var config = config
        config.runtime.backoff = Backoff(base: .milliseconds(50), cap: .milliseconds(400))
        config.runtime.statusInterval = .milliseconds(200)
        config.runtime.keepaliveAfter = .milliseconds(500)
        config.runtime.deadAfter = .milliseconds(1500)
        return config
    }

    static func okxBody(port: Int, name: String = "okx-sim", instruments: [String] = ["BTC-USDT", "ETH-USDT"]) -> String {
        let args = instruments.map { JSONValue.object(["channel": "trades", "instId": .string($0)]) }
        return JSONValue.object([
            "name": .string(name), "connector_type": "websocket", "exchange": "okx",
            "api_url": .string("ws://127.0.0.1:\(port)/ws/v5/public"),
            "subscription_message": .object(["op": "subscribe", "args": .array(args)]),
        ]).serialized
    }

    /// Per instrument, the trade ids stored (from `source_id`), and every stored price by source.
    static func storedTrades(_ config: AppConfig, connector: String) async throws -> [String] {
        try await RawDatabase.strings(
            config,
            "SELECT source_id || '|' || CAST(price AS TEXT) || '|' || instrument FROM websocket_messages WHERE connector_id = '\(connector)' ORDER BY id"
        ).compactMap { $0 }
    }

    @Test(arguments: TestBackend.enabled)
    func everyTradeIsStoredOnceAndBroadcastWithItsID(_ backend: TestBackend) async throws {
        var options = SimulatorOptions()
        options.rate = 400
        options.total = 300
        let exchange = FakeExchange(options: options)
        try await exchange.withRunning { simulatorPort in
            try await backend.withConfig { config in
                let config = Self.fast(config)
                try await TestServer(config: config).run { client in
                    let listener = try await RealtimeListener(port: client.port!)
                    defer { listener.close() }
                    let created = try await client.json(.post, "/api/connectors", body: Self.okxBody(port: simulatorPort))
                    let id = try #require(created.body["connector_id"]?.stringValue)
                    #expect(try await client.json(.post, "/api/connectors/\(id)/start").status == .ok)

                    let updates = try await listener.waitForUpdates(300)
                    #expect(updates.count == 300)
                    let rows = try await Self.storedTrades(config, connector: id)
                    #expect(rows.count == 300)
                    #expect(Set(rows).count == 300, "no duplicates")
                    for instrument in ["BTC-USDT", "ETH-USDT"] {
                        let ids = rows.filter { $0.hasSuffix("|" + instrument) }.compactMap {
                            Int($0.split(separator: "|")[0].split(separator: ":").last!)
                        }
                        #expect(ids.sorted() == Array(1...150), "no gaps for \(instrument)")
                    }
                    // The same seed replays the same market: every stored price is the one sent, exactly.
                    var market = SimulatedMarket(seed: exchange.options.seed)
                    var sentPrices: [String: String] = [:]
                    for instrument in ["BTC-USDT", "ETH-USDT"] {
                        for _ in 1...150 {
                            let trade = market.next(.okx, instrument)
                            sentPrices["okx:trades:\(instrument):\(trade.id)"] = trade.price
                        }
                    }
                    for row in rows {
                        let parts = row.split(separator: "|").map(String.init)
                        #expect(parts[1] == sentPrices[parts[0]], "exact price for \(parts[0])")
                    }
                    let first = try #require(updates.first)
                    #expect(first["id"]?.text != nil)
                    #expect(first["connector_id"] == .string(id))
                    #expect(first["exchange"] == "okx")
                    #expect(first["message_type"] == "trade")
                    #expect(Set(updates.compactMap { $0["id"]?.text }).count == 300, "each update carries its own database id")
                    let status = try await client.json(.get, "/api/connectors/\(id)")
                    #expect(status.body["data"]?["status"] == "running")
                    #expect(status.body["data"]?["performance_metrics"]?["messages_stored"] == .number(300))
                }
            }
        }
    }

    /// Runs a fake exchange and a server on `backend`, creates the connector from `body` and starts it.
    static func withStartedConnector(
        _ backend: TestBackend,
        options: SimulatorOptions,
        configure: @escaping @Sendable (inout AppConfig) -> Void = { _ in },
        body: @escaping @Sendable (_ port: Int) -> String = { Self.okxBody(port: $0) },
        _ test: @escaping @Sendable (FakeExchange, AppConfig, any TestClientProtocol, String) async throws -> Void
    ) async throws {
        let exchange = FakeExchange(options: options)
        try await exchange.withRunning { simulatorPort in
            try await backend.withConfig { config in
                var configured = Self.fast(config)
                configure(&configured)
                let config = configured
                let server = TestServer(config: config)
                try await server.run { client in
                    let created = try await client.json(.post, "/api/connectors", body: body(simulatorPort))
                    let id = try #require(created.body["connector_id"]?.stringValue)
                    #expect(try await client.json(.post, "/api/connectors/\(id)/start").status == .ok)
                    try await test(exchange, config, client, id)
                }
            }
        }
    }

    static func count(_ config: AppConfig, _ connector: String) async throws -> Int {
        Int(
            try await RawDatabase.strings(config, "SELECT CAST(COUNT(*) AS TEXT) FROM websocket_messages WHERE connector_id = '\(connector)'").first
                .flatMap { $0 } ?? "0"
        ) ?? 0
    }

    /// A stop closes the connection in good order: every trade the exchange put on the wire before
    /// it saw the close is read and stored (at full speed some always are in flight), through the
    /// memory tier and the spool (a small memory tier, so the connector spools while it drains).
    @Test(arguments: [TestBackend.sqlite])
    func aStoppedConnectorKeepsWhatWasAlreadySent(_ backend: TestBackend) async throws {
        var options = SimulatorOptions()
        options.rate = 0
        options.tradesPerFrame = 20
        let configure: @Sendable (inout AppConfig) -> Void = { config in
            config.spoolMemoryMessages = 1000
            // Room to read the whole backlog: at full speed the socket buffers hold tens of
            // thousands of trades, and a debug build spooling each one has taken more than 2 s
            // to read them (`CONNECTOR_STOP_DRAIN_MS` bounds that in production).
            config.runtime.stopDrainTime = .seconds(60)
        }
        try await Self.withStartedConnector(backend, options: options, configure: configure) { exchange, config, client, id in
            let streaming = try await eventually { try await Self.count(config, id) > 2000 }
            #expect(streaming)
            // Not through the test client: it gives up on a request after 20 s (and closes its
            // connection for good), and a busy machine can take longer to read the backlog.
            let stopped = try await RawHTTP.exchange(
                port: try #require(client.port),
                head: "POST /api/connectors/\(id)/stop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                timeout: .seconds(90)
            )
            #expect(stopped.hasPrefix("HTTP/1.1 200"), "\(stopped.prefix(300))")
            let sent = exchange.sentCount
            // Two checks. Every trade the connector received is stored, exactly. And it received
            // every trade the exchange put on the wire before its Close, within the fake
            // exchange's own slack: its `sentCount` also counts frames its pacing task queued
            // behind the Close reply while the socket was full (the reply waits for room in the
            // channel like any frame, and writes fail only once it has been handed over), so up
            // to a channel write buffer (NIO's high watermark, 64 KiB) of frames no client may
            // read. At about 100 bytes per trade record that is at most 656 trades; seen once:
            // 240 (12 frames), on a loaded machine. A real loss (the socket not read to the
            // close) is the socket buffers' backlog, tens of thousands of trades at full speed.
            let slack = 64 * 1024 / 100 + exchange.options.tradesPerFrame
            let received: @Sendable () async throws -> Int = {
                // A fresh connection: the test client's may have been closed as idle meanwhile.
                let metrics = try await RawHTTP.exchange(
                    port: try #require(client.port),
                    head: "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                let line = metrics.split(separator: "\n").first {
                    $0.hasPrefix("tributary_connector_messages_received_total") && $0.contains(id)
                }
                return line.flatMap { $0.split(separator: " ").last }.flatMap { Int($0) } ?? -1
            }
            let allStored = try await eventually(timeout: .seconds(120)) {
                let stored = try await Self.count(config, id)
                return try await stored == received()
            }
            let (stored, accepted) = (try await Self.count(config, id), try await received())
            #expect(allStored && stored == accepted, "received \(accepted), stored \(stored)")
            #expect(accepted <= sent && accepted >= sent - slack, "sent \(sent), received \(accepted), slack \(slack)")
        }
    }

    @Test(arguments: TestBackend.enabled)
    func reconnectsAfterDropsAndResubscribesWithoutDuplicates(_ backend: TestBackend) async throws {
        var options = SimulatorOptions()
        options.rate = 1000
        options.total = 300
        options.dropEvery = 70
        try await Self.withStartedConnector(backend, options: options) { exchange, config, client, id in
            #expect(try await eventually { try await Self.count(config, id) == 300 })
            let rows = try await Self.storedTrades(config, connector: id)
            #expect(Set(rows).count == 300)
            #expect(exchange.connectionCount >= 5, "dropped every 70 trades: \(exchange.connectionCount) connections")
            let sessions = try await RawDatabase.strings(config, "SELECT DISTINCT session_id FROM websocket_messages WHERE connector_id = '\(id)'")
            #expect(sessions.count >= 5, "each connection is a new session")
            #expect(try await eventually { try await client.json(.get, "/api/connectors/\(id)").body["data"]?["status"] == "running" })
            let metrics = try await client.json(.get, "/api/connectors/\(id)").body["data"]?["performance_metrics"]
            #expect((metrics?["reconnects"]?.int64 ?? 0) >= 4)
        }
    }

    /// Frames of thousands of trades (hundreds of KiB each) are normalized and stored whole.
    @Test func largeFramesAreNormalizedAndStoredWhole() async throws {
        var options = SimulatorOptions()
        options.rate = 0
        options.tradesPerFrame = 3_000
        options.total = 12_000
        try await Self.withStartedConnector(.sqlite, options: options) { _, config, client, id in
            #expect(try await eventually { try await Self.count(config, id) == 12_000 })
            let data = try await client.json(.get, "/api/connectors/\(id)").body["data"]
            #expect(data?["performance_metrics"]?["messages_failed"] == .number(0))
            #expect(data?["status"] == "running")
        }
    }

    /// Small frames go to the pipeline on the event loop, large and fragmented ones through the
    /// connector's task (`ExchangeFrameReader`); mixed, every trade is stored in the order sent.
    @Test func mixedFrameSizesAreStoredInTheOrderSent() async throws {
        var options = SimulatorOptions()
        options.rate = 0
        // 1,000 and 800 OKX trades make frames of about 100 and 80 KiB, over the 64 KiB kept inline.
        options.tradesPerFramePattern = [1, 1, 1_000, 1, 2, 1, 800, 3, 1]
        options.total = 12_000
        try await Self.withStartedConnector(.sqlite, options: options) { _, config, client, id in
            #expect(try await eventually { try await Self.count(config, id) == 12_000 })
            let rows = try await Self.storedTrades(config, connector: id)
            for instrument in ["BTC-USDT", "ETH-USDT"] {
                let ids = rows.filter { $0.hasSuffix("|" + instrument) }.compactMap { row in
                    row.split(separator: "|").first?.split(separator: ":").last.flatMap { Int($0) }
                }
                #expect(ids == Array(1...6_000), "\(instrument): every trade, in the order sent")
            }
            let data = try await client.json(.get, "/api/connectors/\(id)").body["data"]
            #expect(data?["performance_metrics"]?["messages_failed"] == .number(0))
        }
    }

    /// While the writer lingers, the connector reads what arrived in one go at the writer's next
    /// start instead of each frame as it comes (`ExchangeFrameReader`): with a 200 ms linger a
    /// read is held until then, so the receive times of a 50-a-second stream bunch up, about ten
    /// frames a read.
    @Test func readsWaitForTheWritersNextTake() async throws {
        var options = SimulatorOptions()
        options.rate = 50
        options.total = 100
        let linger: @Sendable (inout AppConfig) -> Void = { $0.batchLinger = .milliseconds(200) }
        try await Self.withStartedConnector(.sqlite, options: options, configure: linger) { _, config, _, id in
            #expect(try await eventually { try await Self.count(config, id) == 100 })
            let received = try await RawDatabase.strings(
                config,
                "SELECT CAST(CAST((julianday(timestamp) - 2440587.5) * 86400000000.0 AS INTEGER) AS TEXT) FROM websocket_messages WHERE connector_id = '\(id)' ORDER BY id"
            ).compactMap { $0.flatMap { Int64($0) } }
            #expect(received.count == 100)
            // Frames come 20 ms apart; those read together are received within a few milliseconds
            // of each other (a debug build normalizes a frame in up to about one).
            let reads = 1 + zip(received, received.dropFirst()).filter { $1 - $0 > 5_000 }.count
            #expect(reads <= 60, "\(reads) separate reads for 100 frames")
            #expect(reads >= 5, "2 s of frames at a 200 ms linger are read in several goes, not held to the end")
        }
    }

    @Test(arguments: TestBackend.enabled)
    func malformedFramesAreCountedAndSkipped(_ backend: TestBackend) async throws {
        var options = SimulatorOptions()
        options.rate = 1000
        options.total = 200
        options.malformedEvery = 50
        try await Self.withStartedConnector(backend, options: options) { _, config, client, id in
            #expect(try await eventually { try await Self.count(config, id) == 200 })
            let data = try await client.json(.get, "/api/connectors/\(id)").body["data"]
            #expect(data?["status"] == "running", "the connector keeps running")
            #expect(data?["performance_metrics"]?["messages_failed"] == .number(4))
            #expect(data?["performance_metrics"]?["messages_stored"] == .number(200))
        }
    }

    /// A connection that delivered data and dropped is followed at once, not after the backoff of
    /// failed attempts (5 s here, so a backed-off reconnect cannot pass for an immediate one on a
    /// loaded machine); no trade is stored twice. How fast "at once" is, is measured in the README.
    @Test func aHealthyConnectionThatDropsIsResumedAtOnce() async throws {
        var options = SimulatorOptions()
        options.rate = 1000
        options.total = 600
        options.dropEvery = 150
        let configure: @Sendable (inout AppConfig) -> Void = {
            $0.runtime.backoff = Backoff(base: .seconds(5))
            $0.runtime.immediateReconnectInterval = .milliseconds(50)
        }
        try await Self.withStartedConnector(.sqlite, options: options, configure: configure) { exchange, config, _, id in
            #expect(try await eventually { try await Self.count(config, id) == 600 })
            let rows = try await Self.storedTrades(config, connector: id)
            #expect(Set(rows).count == 600)
            let gaps = exchange.reconnectGaps
            #expect(gaps.count >= 3, "\(gaps)")
            #expect(gaps.allSatisfy { $0 < .seconds(2) }, "drop → subscribed again: \(gaps)")
        }
    }

    /// OKX closes a connection whose client sent nothing for 30 s even while data flows to it:
    /// text pings go out at least every `maxSendSilence` whatever the traffic.
    @Test func okxGetsPingsUnderSteadyDataToo() async throws {
        var options = SimulatorOptions()
        options.rate = 100
        options.idleTimeout = .milliseconds(1500)
        let configure: @Sendable (inout AppConfig) -> Void = { $0.runtime.maxSendSilence = .milliseconds(500) }
        try await Self.withStartedConnector(.sqlite, options: options, configure: configure) { exchange, config, _, id in
            #expect(try await eventually { try await Self.count(config, id) > 20 })
            try await Task.sleep(for: .seconds(4))
            #expect(exchange.connectionCount == 1, "the exchange never closed the connection for client silence")
            #expect(exchange.pingsAnswered >= 4)
        }
    }

    @Test func okxIdleRuleIsMetWithTextPings() async throws {
        var options = SimulatorOptions()
        options.rate = 100
        options.total = 10
        options.idleTimeout = .milliseconds(1500)
        try await Self.withStartedConnector(TestBackend.sqlite, options: options) { exchange, config, client, id in
            #expect(try await eventually { try await Self.count(config, id) == 10 })
            // Several idle periods pass with no data: only the connector's pings keep the connection open.
            try await Task.sleep(for: .seconds(5))
            #expect(exchange.connectionCount == 1, "the exchange never closed the idle connection")
            #expect(exchange.pingsAnswered >= 3)
            #expect(try await client.json(.get, "/api/connectors/\(id)").body["data"]?["status"] == "running")
        }
    }

    @Test func binanceCombinedStreamWithProtocolPings() async throws {
        var options = SimulatorOptions()
        options.rate = 200
        options.total = 100
        // A pong must come back within one period or the exchange closes: 2 s leaves room for a busy test machine.
        options.pingInterval = .seconds(2)
        let body: @Sendable (Int) -> String = { port in
            JSONValue.object([
                "name": "binance-sim", "connector_type": "websocket", "exchange": "binance",
                "api_url": .string("ws://127.0.0.1:\(port)/stream?streams=btcusdt@trade/ethusdt@trade"),
            ]).serialized
        }
        try await Self.withStartedConnector(.sqlite, options: options, body: body) { exchange, config, client, id in
            #expect(try await eventually { try await Self.count(config, id) == 100 })
            // Without pongs the exchange would close at its second ping, 4 s after connecting.
            try await Task.sleep(for: .seconds(5))
            #expect(exchange.connectionCount == 1, "protocol pings were answered, so the exchange kept the connection")
            let sources = try await RawDatabase.strings(
                config,
                "SELECT source_id FROM websocket_messages WHERE connector_id = '\(id)' ORDER BY id LIMIT 1"
            )
            #expect(sources.first??.hasPrefix("binance:trade:") == true)
        }
    }

    @Test(arguments: TestBackend.enabled)
    func stopAndRestart(_ backend: TestBackend) async throws {
        var options = SimulatorOptions()
        options.rate = 200
        try await Self.withStartedConnector(backend, options: options) { _, config, client, id in
            #expect(try await eventually { try await Self.count(config, id) > 20 })
            let stopped = try await client.json(.post, "/api/connectors/\(id)/stop")
            #expect(stopped.body["data"]?["status"] == "stopped")
            try await Task.sleep(for: .milliseconds(300))
            let afterStop = try await Self.count(config, id)
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await Self.count(config, id) == afterStop, "nothing is ingested while stopped")
            #expect(try await client.json(.get, "/api/connectors/\(id)/status").body["data"]?["status"] == "stopped")
            #expect(try await client.json(.post, "/api/connectors/\(id)/restart").status == .ok)
            #expect(try await eventually { try await Self.count(config, id) > afterStop + 20 })
            #expect(try await client.json(.get, "/api/connectors/\(id)").body["data"]?["status"] == "running")
        }
    }

    @Test(arguments: TestBackend.enabled)
    func aServerRestartResumesRunningConnectors(_ backend: TestBackend) async throws {
        var options = SimulatorOptions()
        options.rate = 200
        let exchange = FakeExchange(options: options)
        try await exchange.withRunning { simulatorPort in
            try await backend.withConfig { config in
                let config = Self.fast(config)
                let id = try await TestServer(config: config).run { client in
                    let created = try await client.json(.post, "/api/connectors", body: Self.okxBody(port: simulatorPort))
                    let id = try #require(created.body["connector_id"]?.stringValue)
                    try await client.json(.post, "/api/connectors/\(id)/start")
                    #expect(try await eventually { try await Self.count(config, id) > 10 })
                    return id
                }
                let before = try await Self.count(config, id)
                try await TestServer(config: config).run { client async throws -> Void in
                    #expect(try await eventually { try await Self.count(config, id) > before + 20 }, "ingest resumed without any API call")
                    #expect(try await client.json(.get, "/api/connectors/\(id)").body["data"]?["status"] == "running")
                }
                let rows = try await Self.storedTrades(config, connector: id)
                #expect(Set(rows).count == rows.count, "no duplicates across the restart")
            }
        }
    }

    @Test func aStalledRealtimeClientDoesNotSlowOthers() async throws {
        var options = SimulatorOptions()
        options.rate = 4000
        options.total = 30_000
        let exchange = FakeExchange(options: options)
        try await exchange.withRunning { simulatorPort in
            try await TestBackend.sqlite.withConfig { config in
                let config = Self.fast(config)
                try await TestServer(config: config).run { client in
                    let stalled = try await StalledWebSocket(port: client.port!, path: "/api/realtime")
                    defer { stalled.close() }
                    let listener = try await RealtimeListener(port: client.port!)
                    defer { listener.close() }
                    let created = try await client.json(.post, "/api/connectors", body: Self.okxBody(port: simulatorPort))
                    let id = try #require(created.body["connector_id"]?.stringValue)
                    try await client.json(.post, "/api/connectors/\(id)/start")
                    let updates = try await listener.waitForUpdates(30_000)
                    #expect(updates.count == 30_000, "the reading client got every update")
                    #expect(try await Self.count(config, id) == 30_000, "ingest lost nothing")
                }
            }
        }
    }

    @Test func aClientThatKeepsOverflowingIsDisconnected() async throws {
        var options = SimulatorOptions()
        options.rate = 2000
        options.total = 60_000
        let exchange = FakeExchange(options: options)
        try await exchange.withRunning { simulatorPort in
            try await TestBackend.sqlite.withConfig { config in
                var configured = Self.fast(config)
                configured.realtimeQueueCapacity = 100
                configured.realtimeOverflowGrace = .milliseconds(300)
                let config = configured
                let server = TestServer(config: config)
                try await server.run { client in
                    let stalled = try await StalledWebSocket(port: client.port!, path: "/api/realtime")
                    defer { stalled.close() }
                    #expect(try !stalled.serverClosed(serverPort: client.port!), "connected: the server's end is open")
                    let created = try await client.json(.post, "/api/connectors", body: Self.okxBody(port: simulatorPort))
                    let id = try #require(created.body["connector_id"]?.stringValue)
                    try await client.json(.post, "/api/connectors/\(id)/start")
                    // Observed on the server, so the stalled socket stays unread (reading would un-stall it).
                    #expect(
                        try await eventually { server.logText.contains("closing a realtime client that cannot keep up") },
                        "the server gave up on the stalled client"
                    )
                    // Still unread: the server lets go of the client only if it cut the connection itself
                    // (a write to the stalled socket never completes otherwise).
                    #expect(
                        try await eventually {
                            let metrics = try await client.execute(uri: "/metrics", method: .get)
                            return ObservabilityTests.value(String(buffer: metrics.body), "tributary_realtime_clients") == 0
                        },
                        "the server dropped the client without its help"
                    )
                    // Closed by the server: reset if not even the 1008 frame fit into the socket, else
                    // closed after it (when the sender merely lagged), either way at once.
                    let closed = try await eventually(timeout: .seconds(5)) { try stalled.serverClosed(serverPort: client.port!) }
                    let realtimeLog = server.logText.split(separator: "\n").filter { $0.contains("realtime") }.suffix(20)
                    #expect(closed, "the server closed its end; server log:\n\(closed ? "" : realtimeLog.joined(separator: "\n"))")
                    let stored = try await Self.count(config, id)
                    #expect(try await eventually { try await Self.count(config, id) > stored }, "ingest kept going")
                    try await client.json(.post, "/api/connectors/\(id)/stop")
                }
            }
        }
    }
}
