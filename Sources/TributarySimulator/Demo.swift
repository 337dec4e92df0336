import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Tributary
import UnixSignals

/// `tributary simulate`: the fake exchange on its own, until SIGINT or SIGTERM.
public func runSimulator(_ options: SimulatorOptions, host: String, port: Int) async throws {
    let logger = Logger(label: "tributary.simulator")
    let exchange = FakeExchange(options: options, logger: logger)
    let app = exchange.application(host: host, port: port) { port in
        print(
            """
            fake exchange on 127.0.0.1:\(port) — \(options.rate == 0 ? "as fast as possible" : "\(options.rate) trades/s"), instruments \(options.instruments.joined(separator: ","))
              OKX v5:   ws://\(host):\(port)/ws/v5/public   (subscribe {"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]})
              Binance:  ws://\(host):\(port)/stream?streams=btcusdt@trade   or   ws://\(host):\(port)/ws/btcusdt@trade
              Bybit:    ws://\(host):\(port)/v5/public/spot   (subscribe {"op":"subscribe","args":["publicTrade.BTCUSDT"]})
              Coinbase: ws://\(host):\(port)/coinbase   (subscribe {"type":"subscribe","product_ids":["BTC-USDT"],"channel":"market_trades"})
              Kraken:   ws://\(host):\(port)/v2   (subscribe {"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USDT"]}})
            """
        )
    }
    try await app.runService()
}

/// `tributary serve --demo`: the server plus an in-process fake exchange (OKX, Binance, Bybit,
/// Coinbase and Kraken streams of BTC-USDT, ETH-USDT and SOL-USDT, about 40 trades/s in all, in
/// bursts and lulls), with one connector per venue created (marked demo) and started, so live
/// data flows with no internet. `seed` makes the market reproducible. The connectors are stopped
/// when the demo ends, and a plain `serve` does not start them.
public func runDemo(_ config: AppConfig, seed: UInt64 = 1) async throws {
    config.bootstrapLogging()
    let logger = Logger(label: "tributary")
    logger.info("starting the demo", metadata: config.logMetadata)
    var options = SimulatorOptions()
    options.rate = 8
    options.bursts = true
    options.coalesce = demoCoalesce
    options.seed = seed
    options.instruments = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    let exchange = FakeExchange(options: options, logger: logger)
    try await exchange.withRunning { exchangePort in
        var config = config
        // The demo's connectors stream from the fake exchange on loopback.
        config.runtime.outbound.allowed += [CIDR("127.0.0.1/32")].compactMap { $0 }
        config.demoConnectors = demoConnectorBodies(exchangePort: exchangePort, instruments: exchange.options.instruments)
        let server = try await buildApplication(config, logger: logger) { serverPort in
            logger.notice(
                "demo running: live trades from a local fake exchange",
                metadata: [
                    "seed": "\(seed)",
                    "watch": "python3 -m websockets ws://127.0.0.1:\(serverPort)/api/realtime",
                    "connectors": "curl http://127.0.0.1:\(serverPort)/api/connectors",
                ]
            )
        }
        try await server.runService()
    }
}

/// How long after a wake-up the demo's fake exchange sends the trades due then, with it: one
/// wake-up a second per connection, like the demo's one commit a second (`demoDefaults`).
let demoCoalesce: Duration = .seconds(1)

/// Settings `serve --demo` uses unless the environment or a flag sets them: its writes are
/// grouped into one transaction a second (`BATCH_LINGER_MS`), so a demo left running costs
/// little (updates reach realtime clients up to a second after their trade).
public let demoDefaults = ["BATCH_LINGER_MS": "1000"]

/// One trade-stream connector per venue of the fake exchange on `exchangePort`.
func demoConnectorBodies(exchangePort: Int, instruments: [String]) -> [JSONValue] {
    let base = "ws://127.0.0.1:\(exchangePort)"
    func symbols(_ venue: FakeVenue, _ transform: (String) -> String = { $0 }) -> JSONValue {
        .array(instruments.map { .string(transform(venue.symbol($0))) })
    }
    func body(_ venue: FakeVenue, path: String, subscription: JSONValue?) -> JSONValue {
        .object([
            "name": .string("demo-\(venue.rawValue)-trades"), "connector_type": "websocket", "exchange": .string(venue.rawValue),
            "api_url": .string(base + path), "subscription_message": subscription ?? .null,
        ])
    }
    return [
        body(
            .okx,
            path: "/ws/v5/public",
            subscription: ["op": "subscribe", "args": .array(instruments.map { .object(["channel": "trades", "instId": .string($0)]) })]
        ),
        body(
            .binance,
            path: "/stream?streams=" + instruments.map { FakeVenue.binance.symbol($0) + "@trade" }.joined(separator: "/"),
            subscription: nil
        ),
        body(.bybit, path: "/v5/public/spot", subscription: ["req_id": "demo", "op": "subscribe", "args": symbols(.bybit) { "publicTrade." + $0 }]),
        body(.coinbase, path: "/coinbase", subscription: ["type": "subscribe", "product_ids": symbols(.coinbase), "channel": "market_trades"]),
        body(.kraken, path: "/v2", subscription: ["method": "subscribe", "params": ["channel": "trade", "symbol": symbols(.kraken)]]),
    ]
}
