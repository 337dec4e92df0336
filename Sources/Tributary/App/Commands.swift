import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
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
            """
        )
    }
    try await app.runService()
}

/// `tributary serve --demo`: the server plus an in-process fake exchange, with an OKX and a
/// Binance connector created (once) and started, so live data flows with no internet.
public func runDemo(_ config: AppConfig) async throws {
    config.bootstrapLogging()
    var config = config
    // The demo's connectors stream from the fake exchange on loopback.
    config.runtime.outbound.allowed += [CIDR("127.0.0.1/32")].compactMap { $0 }
    let logger = Logger(label: "tributary")
    var options = SimulatorOptions()
    options.rate = 20
    options.instruments = ["BTC-USDT", "ETH-USDT"]
    let exchange = FakeExchange(options: options, logger: logger)
    let (exchangePorts, exchangeContinuation) = AsyncStream.makeStream(of: Int.self)
    let (serverPorts, serverContinuation) = AsyncStream.makeStream(of: Int.self)
    let simulator = exchange.application(port: 0) { exchangeContinuation.yield($0) }
    let server = try await buildApplication(config, logger: logger) { serverContinuation.yield($0) }
    let group = ServiceGroup(
        configuration: .init(services: [simulator, server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    )
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var exchangeIterator = exchangePorts.makeAsyncIterator()
        var serverIterator = serverPorts.makeAsyncIterator()
        guard let exchangePort = await exchangeIterator.next(), let serverPort = await serverIterator.next() else { return }
        let client = BenchHTTPClient(port: serverPort, token: config.apiTokens.first)
        let demos: [JSONValue] = [
            .object([
                "name": "demo-okx-trades", "connector_type": "websocket", "exchange": "okx",
                "api_url": .string("ws://127.0.0.1:\(exchangePort)/ws/v5/public"),
                "subscription_message": .object([
                    "op": "subscribe",
                    "args": .array([.object(["channel": "trades", "instId": "BTC-USDT"]), .object(["channel": "trades", "instId": "ETH-USDT"])]),
                ]),
            ]),
            .object([
                "name": "demo-binance-trades", "connector_type": "websocket", "exchange": "binance",
                "api_url": .string("ws://127.0.0.1:\(exchangePort)/stream?streams=btcusdt@trade/ethusdt@trade"),
            ]),
        ]
        for demo in demos {
            do {
                _ = try await client.createOrUpdateAndStart(demo)
            } catch {
                logger.error("could not set up a demo connector", metadata: ["error_type": "\(type(of: error))", "error": "\(error)"])
            }
        }
        logger.notice(
            "demo running: live trades from a local fake exchange",
            metadata: [
                "watch": "python3 -m websockets ws://127.0.0.1:\(serverPort)/api/realtime",
                "connectors": "curl http://127.0.0.1:\(serverPort)/api/connectors",
            ]
        )
        try await tasks.waitForAll()
    }
}
