import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// The query endpoints against known rows, on both backends; candles checked against values
/// computed by hand.
@Suite struct QueryAPITests {
    /// (time within 2026-01-01T00:0, instrument, type, price, quantity)
    static let rows: [(String, String, String, String, String)] = [
        ("0:10", "BTC-USDT", "trade", "100.5", "0.1"),
        ("0:20", "BTC-USDT", "trade", "101.25", "0.2"),
        ("0:50", "BTC-USDT", "trade", "99.75", "0.3"),
        ("1:05", "BTC-USDT", "trade", "102", "1"),
        ("1:30", "BTC-USDT", "trade", "101", "0.5"),
        ("1:40", "BTC-USDT", "ticker", "101.1", "0.01"),
        ("1:45", "ETH-USDT", "trade", "3500.123456789012", "2"),
    ]

    static func time(_ minuteSecond: String) -> String {
        let parts = minuteSecond.split(separator: ":")
        return "2026-01-01T00:0\(parts[0]):\(parts[1]).000000Z"
    }

    /// Writes `rows` the way the pipeline does, through the store's batch insert (which also
    /// keeps `candles_1m`), as one batch per element of `batches`; with `compacting`, folds staged
    /// candle minutes after each batch.
    static func insert(
        _ config: AppConfig,
        _ batches: [[(index: Int, time: String, instrument: String, type: String, price: String, quantity: String)]],
        compacting: Bool = false,
        exchange: Exchange = .binance
    ) async throws {
        let connectorID = exchange == .binance ? "conn_query" : "conn_\(exchange.rawValue)"
        try await withStore(config, logger: Logger(label: "test")) { store in
            for rows in batches {
                let pending = rows.map { row in
                    PendingMessage(
                        connectorID: connectorID,
                        sessionID: "ws_1",
                        sourceID: "src-\(row.index)",
                        message: MarketMessage(
                            exchange: exchange,
                            channel: "trade",
                            messageType: MessageType(rawValue: row.type) ?? .other,
                            instrument: row.instrument,
                            symbol: row.instrument.replacingOccurrences(of: "-", with: ""),
                            price: row.price,
                            quantity: row.quantity,
                            side: "buy",
                            raw: .null
                        ),
                        receivedAt: Timestamp.parse(row.time) ?? Date()
                    )
                }
                _ = try await store.insertMessages(pending, batch: BatchRecord(batchID: UUID().uuidString, connectorID: connectorID, metrics: [:]))
                if compacting { _ = try await store.compactCandles() }
            }
        }
    }

    static func load(_ config: AppConfig) async throws {
        try await insert(
            config,
            [rows.enumerated().map { (index, row) in (index, Self.time(row.0), row.1, row.2, row.3, row.4) }]
        )
    }

    func withServer(_ backend: TestBackend, _ body: @Sendable @escaping (any TestClientProtocol, AppConfig) async throws -> Void) async throws {
        try await backend.withConfig { config in
            try await TestServer(config: config).run { client in
                try await Self.load(config)
                try await body(client, config)
            }
        }
    }

    @Test(arguments: TestBackend.enabled)
    func messagesPageThroughEverythingNewestFirstWithAStableCursor(_ backend: TestBackend) async throws {
        try await withServer(backend) { client, config in
            var seen: [String] = []
            var cursor: String?
            var pages = 0
            repeat {
                let response = try await client.json(.get, "/api/messages?instrument=BTC-USDT&limit=2" + (cursor.map { "&cursor=\($0)" } ?? ""))
                #expect(response.status == .ok)
                seen += response.body["data"]?.arrayValue?.compactMap { $0["price"]?.stringValue } ?? []
                cursor = response.body["next_cursor"]?.stringValue
                pages += 1
                if pages == 1 {
                    // A row arriving meanwhile does not shift the pages already being read.
                    _ = try await RawDatabase.strings(
                        config,
                        """
                        INSERT INTO websocket_messages (connector_id, exchange, instrument, message_type, price, data, source_id, timestamp)
                        VALUES ('conn_query', 'binance', 'BTC-USDT', 'trade', '999', '{}', 'late', '2026-01-01T00:05:00.000000Z')
                        """
                    )
                }
            } while cursor != nil && pages < 10
            #expect(seen == ["101.1", "101", "102", "99.75", "101.25", "100.5"])
            #expect(pages == 3)
            let first = try await client.json(.get, "/api/messages?instrument=BTCUSDT&limit=1")
            #expect(first.body["data"]?[0]?["price"] == "999", "the exchange symbol finds the normalized instrument")
            #expect(first.body["data"]?[0]?["timestamp"] == "2026-01-01T00:05:00.000000Z")
        }
    }

    @Test(arguments: TestBackend.enabled)
    func messageFilters(_ backend: TestBackend) async throws {
        try await withServer(backend) { client, _ in
            func prices(_ query: String) async throws -> [String] {
                let response = try await client.json(.get, "/api/messages?" + query)
                #expect(response.status == .ok, "\(query): \(response.body)")
                return response.body["data"]?.arrayValue?.compactMap { $0["price"]?.stringValue } ?? []
            }
            #expect(try await prices("message_type=ticker") == ["101.1"])
            #expect(try await prices("instrument=ETH-USDT") == ["3500.123456789012"])
            #expect(try await prices("exchange=okx").isEmpty)
            #expect(try await prices("connector_id=conn_query&message_type=trade&instrument=BTC-USDT").count == 5)
            #expect(try await prices("since=2026-01-01T00:01:00Z&until=2026-01-01T00:01:40Z") == ["101", "102"])
            // Epoch milliseconds work too: 2026-01-01T00:00:50Z is 1767225650000.
            #expect(try await prices("instrument=BTC-USDT&until=1767225650000") == ["101.25", "100.5"])
            let message = try await client.json(.get, "/api/messages?message_type=ticker").body["data"]?[0]
            #expect(message?["symbol"] == "BTCUSDT")
            #expect(message?["source_id"] == "src-5")
            #expect(message?["data"]?["price"] == "101.1")
        }
    }

    @Test(arguments: TestBackend.enabled)
    func historyPointsAndHandComputedCandles(_ backend: TestBackend) async throws {
        try await withServer(backend) { client, _ in
            let range = "since=2026-01-01T00:00:00Z&until=2026-01-01T01:00:00Z"
            let points = try await client.json(.get, "/api/instruments/BTC-USDT/history?\(range)")
            #expect(points.body["data"]?.arrayValue?.compactMap { $0["price"]?.stringValue } == ["100.5", "101.25", "99.75", "102", "101", "101.1"])
            let candles = try await client.json(.get, "/api/instruments/BTC-USDT/history?\(range)&interval=1m")
            #expect(candles.status == .ok)
            let expected: [JSONValue] = [
                .object([
                    "time": "2026-01-01T00:00:00.000000Z", "open": "100.5", "high": "101.25", "low": "99.75", "close": "99.75", "volume": "0.6",
                    "trade_count": .number(3),
                ]),
                .object([
                    "time": "2026-01-01T00:01:00.000000Z", "open": "102", "high": "102", "low": "101", "close": "101", "volume": "1.5",
                    "trade_count": .number(2),
                ]),
            ]
            #expect(candles.body["data"] == .array(expected))
            let hourly = try await client.json(.get, "/api/instruments/BTCUSDT/history?\(range)&interval=1h")
            #expect(hourly.body["data"]?[0]?["open"] == "100.5")
            #expect(hourly.body["data"]?[0]?["close"] == "101")
            #expect(hourly.body["data"]?[0]?["trade_count"] == .number(5))
        }
    }

    /// History and candles of one exchange, or one connector's price points, when two exchanges
    /// trade the instrument; whole minutes come from the rollup and partial ones from the trades.
    @Test(arguments: TestBackend.enabled)
    func historyAndCandlesFilterByExchangeAndConnector(_ backend: TestBackend) async throws {
        try await withServer(backend) { client, config in
            try await Self.insert(
                config,
                [[(200, Self.time("0:30"), "BTC-USDT", "trade", "200", "0.5"), (201, Self.time("1:10"), "BTC-USDT", "trade", "150", "1")]],
                exchange: .okx
            )
            func data(_ query: String) async throws -> [JSONValue] {
                let response = try await client.json(.get, "/api/instruments/BTC-USDT/history?" + query)
                #expect(response.status == .ok, "\(query): \(response.body)")
                return response.body["data"]?.arrayValue ?? []
            }
            let range = "since=2026-01-01T00:00:00Z&until=2026-01-01T01:00:00Z"
            func candle(_ minute: Int, _ values: [String], _ count: Int) -> JSONValue {
                .object([
                    "time": .string("2026-01-01T00:0\(minute):00.000000Z"), "open": .string(values[0]), "high": .string(values[1]),
                    "low": .string(values[2]), "close": .string(values[3]), "volume": .string(values[4]), "trade_count": .number(count),
                ])
            }
            #expect(
                try await data(range + "&interval=1m")
                    == [candle(0, ["100.5", "200", "99.75", "99.75", "1.1"], 4), candle(1, ["102", "150", "101", "101", "2.5"], 3)]
            )
            #expect(
                try await data(range + "&interval=1m&exchange=binance")
                    == [candle(0, ["100.5", "101.25", "99.75", "99.75", "0.6"], 3), candle(1, ["102", "102", "101", "101", "1.5"], 2)]
            )
            #expect(
                try await data(range + "&interval=1m&exchange=okx") == [
                    candle(0, ["200", "200", "200", "200", "0.5"], 1), candle(1, ["150", "150", "150", "150", "1"], 1),
                ]
            )
            // Partial minutes at both edges: from the trades, filtered the same way.
            let edges = "since=2026-01-01T00:00:15Z&until=2026-01-01T00:01:20Z&interval=1m"
            #expect(try await data(edges + "&exchange=okx").compactMap { $0["high"]?.stringValue } == ["200", "150"])
            #expect(try await data(edges + "&exchange=binance").compactMap { $0["high"]?.stringValue } == ["101.25", "102"])
            #expect(try await data(range + "&exchange=okx").compactMap { $0["price"]?.stringValue } == ["200", "150"])
            #expect(try await data(range + "&connector_id=conn_okx").compactMap { $0["price"]?.stringValue } == ["200", "150"])
            #expect(try await data(range + "&connector_id=conn_query&exchange=okx").isEmpty)
            #expect(try await data(range).count == 8)
        }
    }

    /// `candles_1m` counts each stored trade once, whatever order and how often trades arrive,
    /// and the partial minutes at the edges of a range come from the trades themselves.
    @Test(arguments: TestBackend.enabled)
    func candleRollupCountsEachTradeOnceInTradeOrder(_ backend: TestBackend) async throws {
        try await withServer(backend) { client, config in
            let t = { (minuteSecond: String) in Self.time(minuteSecond) }
            // Folded batch by batch, so minutes already in candles_1m get merged with new ones.
            try await Self.insert(
                config,
                [
                    [(100, t("0:30"), "SOL-USDT", "trade", "10", "1"), (101, t("0:40"), "SOL-USDT", "trade", "12", "1")],
                    // An earlier trade (the new open), the close, and a re-delivery of src-100 that must add nothing.
                    [
                        (102, t("0:05"), "SOL-USDT", "trade", "9.5", "0.5"), (103, t("0:55"), "SOL-USDT", "trade", "11", "2"),
                        (100, t("0:59"), "SOL-USDT", "trade", "999", "50"),
                    ],
                ],
                compacting: true
            )
            // Not folded yet on PostgreSQL (unless the server's compactor gets there first): read from candle_deltas.
            try await Self.insert(
                config,
                [[(104, t("1:10"), "SOL-USDT", "trade", "13", "1"), (105, t("1:20"), "SOL-USDT", "ticker", "500", "1")]]
            )
            func candles(_ query: String) async throws -> [JSONValue] {
                let response = try await client.json(.get, "/api/instruments/SOL-USDT/history?" + query)
                #expect(response.status == .ok, "\(query): \(response.body)")
                return response.body["data"]?.arrayValue ?? []
            }
            // Whether or not the server's compactor has folded PostgreSQL's staged minutes yet, the answer is the same.
            let beforeCompaction = try await candles("since=2026-01-01T00:00:00Z&until=2026-01-01T00:02:00Z&interval=1m")
            _ = try await withStore(config, logger: Logger(label: "test")) { store in try await store.compactCandles() }
            if backend == .postgres { #expect(try await RawDatabase.strings(config, "SELECT count(*)::text FROM candle_deltas") == ["0"]) }
            let counts = try await RawDatabase.strings(
                config,
                "SELECT CAST(trade_count AS TEXT) FROM candles_1m WHERE instrument = 'SOL-USDT' ORDER BY bucket"
            )
            #expect(counts == ["4", "1"])
            let whole = try await candles("since=2026-01-01T00:00:00Z&until=2026-01-01T00:02:00Z&interval=1m")
            #expect(whole == beforeCompaction)
            #expect(
                whole == [
                    .object([
                        "time": "2026-01-01T00:00:00.000000Z", "open": "9.5", "high": "12", "low": "9.5", "close": "11", "volume": "4.5",
                        "trade_count": .number(4),
                    ]),
                    .object([
                        "time": "2026-01-01T00:01:00.000000Z", "open": "13", "high": "13", "low": "13", "close": "13", "volume": "1",
                        "trade_count": .number(1),
                    ]),
                ]
            )
            // From 00:00:20 the first minute is partial: read from the trades (10, 12, 11), the second from the rollup.
            let edged = try await candles("since=2026-01-01T00:00:20Z&until=2026-01-01T00:02:00Z&interval=1m")
            #expect(edged.first?["open"] == "10")
            #expect(edged.first?["volume"] == "4")
            #expect(edged.first?["trade_count"] == .number(3))
            #expect(edged.last == whole.last)
            let hour = try await candles("since=2026-01-01T00:00:20Z&until=2026-01-01T00:02:00Z&interval=1h")
            #expect(hour.first?["open"] == "10")
            #expect(hour.first?["close"] == "13")
            #expect(hour.first?["trade_count"] == .number(4))

            // Trades written around Tributary are in the candles once the rollup is rebuilt.
            _ = try await RawDatabase.strings(
                config,
                """
                INSERT INTO websocket_messages (connector_id, exchange, instrument, message_type, price, quantity, data, source_id, timestamp)
                VALUES ('conn_query', 'okx', 'SOL-USDT', 'trade', '8', '3', '{}', 'raw-1', '\(t("1:30"))')
                """
            )
            try await withStore(config, logger: Logger(label: "test")) { store in try await store.rebuildCandles() }
            let rebuilt = try await candles("since=2026-01-01T00:00:00Z&until=2026-01-01T00:02:00Z&interval=1m")
            #expect(rebuilt.first == whole.first)
            #expect(rebuilt.last?["low"] == "8")
            #expect(rebuilt.last?["close"] == "8")
            #expect(rebuilt.last?["volume"] == "4")
        }
    }

    @Test func badParametersAreRejectedByName() async throws {
        try await withServer(.sqlite) { client, _ in
            let cases: [(String, String)] = [
                ("/api/messages?limit=0", "limit"), ("/api/messages?limit=5000", "limit"), ("/api/messages?cursor=garbage", "cursor"),
                ("/api/messages?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since"), ("/api/messages?since=yesterday", "since"),
                ("/api/messages?message_type=quote", "message_type"), ("/api/instruments/BTC-USDT/history?interval=2m", "interval"),
                ("/api/instruments/BTC-USDT/history?interval=1m&since=2000-01-01T00:00:00Z", "interval"), ("/api/batches?limit=-1", "limit"),
                ("/api/batches?cursor=MjAyNg", "cursor"), ("/api/instruments/BTC-USDT/history?exchange=nasdaq", "exchange"),
                ("/api/messages?exchange=OKX", "exchange"), ("/api/instruments/BTC-USDT/history?interval=1m&connector_id=conn_query", "connector_id"),
                // Parameters a route does not take, on every route: named, never ignored.
                ("/api/instruments/BTC-USDT/history?bogus=1", "bogus"), ("/api/messages?instrument=BTC-USDT&Limit=5", "Limit"),
                ("/api/connectors?exchange=okx", "exchange"), ("/api/connectors/conn_x/status?limit=1", "limit"), ("/api/batches?since=1", "since"),
                ("/health?verbose=1", "verbose"), ("/openapi.json?format=yaml", "format"), ("/api/dead-letters?exchange=okx", "exchange"),
            ]
            for (uri, field) in cases {
                let response = try await client.json(.get, uri)
                #expect(response.status == .badRequest, "\(uri)")
                #expect(response.body["errors"]?[0]?["field"]?.stringValue == field, "\(uri): \(response.body)")
                #expect(response.body["error_code"] == "VALIDATION_ERROR")
            }
        }
    }

    @Test(arguments: TestBackend.enabled)
    func connectorDataAndBatchesArePaginated(_ backend: TestBackend) async throws {
        try await withServer(backend) { client, config in
            let created = try await client.json(.post, "/api/connectors", body: RestConnectorTests.body("rest", "http://127.0.0.1:9/x"))
            let id = try #require(created.body["connector_id"]?.stringValue)
            _ = try await RawDatabase.strings(config, "DELETE FROM websocket_batches")  // the batch that loaded the rows
            for second in 1...3 {
                _ = try await RawDatabase.strings(
                    config,
                    """
                    INSERT INTO api_connector_data (connector_id, data, raw_response, status_code, response_time_ms, source_id, session_id, timestamp)
                    VALUES ('\(id)', '{"price":"\(second).5"}', '{"p":"\(second).5"}', 200, 12.5, 'poll_\(second)', 'poll_\(second)',
                        '2026-01-01T00:00:0\(second).000000Z')
                    """
                )
                _ = try await RawDatabase.strings(
                    config,
                    """
                    INSERT INTO websocket_batches (batch_id, connector_id, message_count, messages, metrics, timestamp)
                    VALUES ('batch_\(second)', 'conn_query', 1, '[\(second)]', '{}', '2026-01-01T00:00:0\(second).000000Z')
                    """
                )
            }
            let first = try await client.json(.get, "/api/connectors/\(id)/data?limit=2")
            #expect(first.body["data"]?.arrayValue?.compactMap { $0["data"]?["price"]?.stringValue } == ["3.5", "2.5"])
            #expect(first.body["data"]?[0]?["raw_response"]?["p"] == "3.5")
            #expect(first.body["data"]?[0]?["status_code"] == .number(200))
            let cursor = try #require(first.body["next_cursor"]?.stringValue)
            let second = try await client.json(.get, "/api/connectors/\(id)/data?limit=2&cursor=\(cursor)")
            #expect(second.body["data"]?.arrayValue?.compactMap { $0["data"]?["price"]?.stringValue } == ["1.5"])
            #expect(second.body["next_cursor"] == .null)
            #expect(try await client.json(.get, "/api/connectors/conn_nope/data").status == .notFound)
            let batches = try await client.json(.get, "/api/batches?limit=2")
            #expect(batches.body["data"]?.arrayValue?.compactMap { $0["batch_id"]?.stringValue } == ["batch_3", "batch_2"])
            #expect(batches.body["data"]?[0]?["messages"] == .array([.number(3)]))
            #expect(batches.body["next_cursor"]?.stringValue != nil)
        }
    }
}
