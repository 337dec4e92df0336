import Foundation
import HTTPTypes
import HummingbirdWSClient
import InMemoryLogging
import Logging
import Synchronization
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// `serve --demo`: the fake exchange's market, its five venues end to end, and the demo
/// connectors' lifecycle.
@Suite struct DemoTests {
    static func decimal(_ text: String) -> Decimal { Decimal(string: text) ?? .nan }

    @Test func theMarketIsSeededPerInstrumentTwoSidedAndHeavyTailed() throws {
        var market = SimulatedMarket(seed: 42)
        var replay = SimulatedMarket(seed: 42)
        var otherSeed = SimulatedMarket(seed: 43)
        let count = 5000
        var trades: [String: [SimulatedTrade]] = [:]
        for instrument in ["BTC-USDT", "ETH-USDT", "DOGE-USDT"] {
            for _ in 0..<count { trades[instrument, default: []].append(market.next(.okx, instrument)) }
        }
        let btc = try #require(trades["BTC-USDT"])
        let eth = try #require(trades["ETH-USDT"])
        let doge = try #require(trades["DOGE-USDT"])
        // Reproducible with the seed, different without it.
        let replayed = (0..<count).map { _ in replay.next(.okx, "BTC-USDT") }
        #expect(replayed.map(\.price) == btc.map(\.price) && replayed.map(\.quantity) == btc.map(\.quantity))
        #expect((0..<count).map { _ in otherSeed.next(.okx, "BTC-USDT").price } != btc.map(\.price))
        for series in [btc, eth, doge] {
            #expect(series.map(\.id) == Array(1...count), "trade ids in sequence")
            // Both sides, in runs: the side changes about one trade in four, not every other trade.
            let buys = series.filter { $0.side == .buy }.count
            let changes = zip(series, series.dropFirst()).filter { $0.side != $1.side }.count
            #expect(buys > count / 5 && buys < count * 4 / 5, "buys: \(buys) of \(count)")
            #expect(changes > count / 10 && changes < count * 2 / 5, "side changes: \(changes)")
            // Heavy-tailed sizes: the largest is far above the typical one.
            let sizes = series.map { Self.decimal($0.quantity) }.sorted()
            #expect(sizes[sizes.count - 1] > sizes[sizes.count / 2] * 50, "largest \(sizes[sizes.count - 1]), median \(sizes[sizes.count / 2])")
            // The price moves.
            #expect(Set(series.map(\.price)).count > 50)
        }
        // Each instrument its own level, in its own ticks, written exactly.
        #expect(Self.decimal(btc[0].price) > 10_000 && Self.decimal(eth[0].price) > 1_000 && Self.decimal(eth[0].price) < 10_000)
        #expect(btc.allSatisfy { $0.price.split(separator: ".").last?.count == 1 }, "BTC ticks of 0.1")
        #expect(eth.allSatisfy { $0.price.split(separator: ".").last?.count == 2 }, "ETH ticks of 0.01")
        #expect(btc.allSatisfy { $0.quantity.split(separator: ".").last?.count == 5 }, "BTC lots of 0.00001")
        // The venues of an instrument trade within a few ticks of each other.
        var venues = SimulatedMarket(seed: 42)
        for _ in 0..<1000 {
            let okx = Self.decimal(venues.next(.okx, "BTC-USDT").price)
            let binance = Self.decimal(venues.next(.binance, "BTC-USDT").price)
            #expect(abs(okx - binance) <= Self.decimal("0.4"))
        }
    }

    /// With `coalesce` a connection sends the trades due within that window after a wake-up
    /// together, each still a frame of its own, and keeps its rate: at 10 trades a second and
    /// 500 ms, bursts of about six frames sent back to back, half a second apart, ids in sequence.
    @Test func coalescedTradesGoOutTogetherAtTheSameRate() async throws {
        var options = SimulatorOptions()
        options.rate = 10
        options.coalesce = .milliseconds(500)
        options.instruments = ["BTC-USDT"]
        let exchange = FakeExchange(options: options)
        let arrivals = try await exchange.withRunning { port in
            let arrivals = Mutex<[(at: ContinuousClock.Instant, id: Int)]>([])
            _ = try await WebSocketClient.connect(
                url: "ws://127.0.0.1:\(port)/ws/btcusdt@trade",
                configuration: .init(),
                logger: Logger(label: "demo")
            ) {
                inbound,
                _,
                _ in
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard case .text(let text) = message, case .number(let number) = try JSONValue.parse(text)["t"], let id = Int(number) else {
                        continue
                    }
                    if arrivals.withLock({
                        $0.append((.now, id))
                        return $0.count >= 12
                    }) {
                        return
                    }
                }
            }
            return arrivals.withLock { $0 }
        }
        try #require(arrivals.count == 12)
        #expect(arrivals.map(\.id) == Array(1...12))
        let gaps = zip(arrivals.dropFirst(), arrivals).map { $0.at - $1.at }
        #expect(gaps.filter { $0 < .milliseconds(50) }.count >= 8, "frames of a wake-up sent together: \(gaps)")
        #expect(arrivals[11].at - arrivals[0].at >= .milliseconds(400), "the rate is kept: \(gaps)")
    }

    /// All five demo connectors stream their venue's protocol into normalized trades; when the demo
    /// ends they are left stopped, and a plain server does not start them even when the demo was
    /// killed before it could stop them.
    @Test(arguments: TestBackend.enabled)
    func demoConnectorsStreamEveryVenueAndAPlainServeLeavesThemStopped(_ backend: TestBackend) async throws {
        var options = SimulatorOptions()
        options.rate = 100
        options.bursts = true
        let exchange = FakeExchange(options: options)
        try await exchange.withRunning { port in
            try await backend.withConfig { base in
                var demo = StreamingTests.fast(base)
                demo.demoConnectors = demoConnectorBodies(exchangePort: port, instruments: exchange.options.instruments)
                let config = demo
                try await TestServer(config: config).run { client in
                    let venues = ["binance", "bybit", "coinbase", "kraken", "okx"]
                    let everyVenue = try await eventually {
                        let rows = try await RawDatabase.strings(
                            config,
                            "SELECT exchange || '|' || instrument || '|' || side FROM websocket_messages WHERE message_type = 'trade'"
                        ).compactMap { $0 }
                        return venues.allSatisfy { venue in
                            ["BTC-USDT", "ETH-USDT"].allSatisfy { instrument in
                                ["buy", "sell"].allSatisfy { rows.contains("\(venue)|\(instrument)|\($0)") }
                            }
                        }
                    }
                    #expect(everyVenue, "each venue's trades of both instruments and both sides, normalized")
                    let listed = try await client.json(.get, "/api/connectors").body["data"]?.arrayValue ?? []
                    #expect(listed.count == 5)
                    #expect(listed.allSatisfy { $0["demo"] == true && $0["desired_state"] == "running" })
                }
                let desired = try await RawDatabase.strings(config, "SELECT desired_state FROM api_connectors")
                #expect(desired.count == 5 && desired.allSatisfy { $0 == "stopped" }, "left stopped when the demo ended: \(desired)")

                // As if the demo had been killed while running: a plain server must not start them.
                _ = try await RawDatabase.strings(config, "UPDATE api_connectors SET desired_state = 'running'")
                let connections = exchange.connectionCount
                var plain = config
                plain.demoConnectors = nil
                let server = TestServer(config: plain)
                try await server.run { client in
                    let stopped = try await eventually {
                        let listed = try await client.json(.get, "/api/connectors").body["data"]?.arrayValue ?? []
                        return listed.count == 5 && listed.allSatisfy { $0["desired_state"] == "stopped" && $0["status"] == "stopped" }
                    }
                    #expect(stopped)
                    try await Task.sleep(for: .milliseconds(500))
                    #expect(exchange.connectionCount == connections, "no connection to the demo's exchange")
                }
                #expect(server.logs.entries.contains { $0.message.description.hasPrefix("demo connectors left stopped") })
            }
        }
    }
}
