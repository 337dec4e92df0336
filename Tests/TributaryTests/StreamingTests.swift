import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import Tributary

/// End to end through real sockets: fake exchange → connector → pipeline → database → realtime client.
@Suite struct StreamingTests {
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
                    for row in rows {
                        let parts = row.split(separator: "|").map(String.init)
                        let tradeID = Int(parts[0].split(separator: ":").last!)!
                        #expect(parts[1] == FakeExchange.price(tradeID), "exact price for \(parts[0])")
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
}
