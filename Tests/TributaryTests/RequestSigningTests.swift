import Foundation
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// Request signing and REST normalization: pure code, checked against the exchanges' published
/// examples (EXCHANGES.md §3) and RFC 4231.
@Suite struct RequestSigningTests {
    static let binanceSecret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"

    @Test(arguments: [
        (
            "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559", "",
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        ),
        (
            "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
            "", "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
        ),
        (
            "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC", "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
            "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
        ),
    ])
    func binancePublishedExamples(query: String, body: String, expected: String) {
        #expect(RequestSigning.binanceSignature(secret: Self.binanceSecret, query: query, body: body) == expected)
    }

    @Test func binancePercentEncodesNonASCIIBeforeSigning() {
        #expect(SignableRequest.percentEncode("１２３４５６") == "%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96")
        #expect(SignableRequest.percentEncode("BTC-USDT_x.~") == "BTC-USDT_x.~")
    }

    @Test(arguments: [
        ("GET", "/api/v5/account/balance?ccy=BTC", "", "5KlCItRxE039QKll2OJlbYeUcSiPGR/z10UR7bbl68o="),
        (
            "POST", "/api/v5/account/set-leverage", #"{"instId":"BTC-USDT","lever":"5","mgnMode":"isolated"}"#,
            "lP9iBBpxhlL3eFjP7QLB+Vc1emnyh9w5squ2tUZRORs="
        ),
    ])
    func okxRegressionVectors(method: String, path: String, body: String, expected: String) {
        let signature = RequestSigning.okxSignature(
            secret: "test-secret",
            timestamp: "2020-12-08T09:08:57.715Z",
            method: method,
            requestPath: path,
            body: body
        )
        #expect(signature == expected)
    }

    @Test func rfc4231TestCase2() {
        let message = "what do ya want for nothing?"
        #expect(
            RequestSigning.encode(RequestSigning.hmac(.sha256, secret: "Jefe", message: message), .hex)
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        )
        #expect(
            RequestSigning.encode(RequestSigning.hmac(.sha512, secret: "Jefe", message: message), .hex)
                == "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        )
    }

    @Test func genericTemplateFillsEveryPlaceholder() {
        let request = SignableRequest(method: "get", path: "/v1/data", query: "a=1", body: "")
        let signature = RequestSigning.genericSignature(
            secret: "Jefe",
            template: "what do ya want for nothing?",
            request: request,
            timestamp: "0",
            algorithm: .sha256,
            encoding: .hex
        )
        #expect(signature == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        let filled = RequestSigning.genericSignature(
            secret: "s",
            template: "{timestamp}|{method}|{path}|{query}|{path_with_query}|{body}",
            request: request,
            timestamp: "17",
            algorithm: .sha256,
            encoding: .base64
        )
        let expected = RequestSigning.encode(RequestSigning.hmac(.sha256, secret: "s", message: "17|GET|/v1/data|a=1|/v1/data?a=1|"), .base64)
        #expect(filled == expected)
    }

    @Test func okxTimestampHasMilliseconds() {
        #expect(RequestSigning.isoMilliseconds(Date(timeIntervalSince1970: 1_607_418_537.715)) == "2020-12-08T09:08:57.715Z")
        #expect(RequestSigning.isoMilliseconds(Date(timeIntervalSince1970: 0.007)) == "1970-01-01T00:00:00.007Z")
    }

    static func definition(_ body: JSONObject) throws -> ConnectorDefinition {
        var object: JSONObject = ["name": "rest", "connector_type": "rest", "polling_interval": .number(1000)]
        for (key, value) in body { object[key] = value }
        return try ConnectorDefinition.parse(.object(object), existing: nil)
    }

    static let now = Date(timeIntervalSince1970: 1_607_418_537.715)

    @Test func okxRequestIsSignedOverPathQueryAndBody() throws {
        let definition = try Self.definition([
            "api_url": "https://www.okx.com/api/v5/account/balance?ccy=BTC", "auth_type": "hmac", "api_key": "key-1",
            "api_secret": "test-secret", "passphrase": "pass-1",
        ])
        let request = try RestRequest.make(definition, now: Self.now)
        #expect(request.url == "https://www.okx.com/api/v5/account/balance?ccy=BTC")
        #expect(request.signable.header("OK-ACCESS-TIMESTAMP") == "2020-12-08T09:08:57.715Z")
        #expect(request.signable.header("OK-ACCESS-SIGN") == "5KlCItRxE039QKll2OJlbYeUcSiPGR/z10UR7bbl68o=")
        #expect(request.signable.header("OK-ACCESS-KEY") == "key-1")
        #expect(request.signable.header("OK-ACCESS-PASSPHRASE") == "pass-1")
    }

    @Test func binanceRequestAppendsTimestampAndSignatureLast() throws {
        let definition = try Self.definition([
            "api_url": "https://api.binance.com/api/v3/account", "auth_type": "hmac",
            "api_key": "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
            "api_secret": .string(Self.binanceSecret), "query_params": .object(["symbol": "LTCBTC"]),
            "signing": .object(["scheme": "binance", "recv_window": "5000"]),
        ])
        let request = try RestRequest.make(definition, now: Date(timeIntervalSince1970: 1_499_827_319.559))
        let query = "symbol=LTCBTC&recvWindow=5000&timestamp=1499827319559"
        #expect(request.signable.query == query + "&signature=" + RequestSigning.binanceSignature(secret: Self.binanceSecret, query: query))
        #expect(request.signable.header("X-MBX-APIKEY") == "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A")
    }

    @Test func apiKeyGoesToTheConfiguredHeaderOrQueryParameter() throws {
        let byHeader = try RestRequest.make(
            Self.definition(["api_url": "https://api.example.com/v1/ticker", "auth_type": "api_key", "api_key": "k-123456"]),
            now: Self.now
        )
        #expect(byHeader.signable.header("X-API-Key") == "k-123456")
        let custom = try RestRequest.make(
            Self.definition([
                "api_url": "https://api.example.com/v1/ticker", "auth_type": "api_key", "api_key": "k-123456",
                "signing": .object(["header": "X-CMC_PRO_API_KEY"]),
            ]),
            now: Self.now
        )
        #expect(custom.signable.header("X-CMC_PRO_API_KEY") == "k-123456")
        let byQuery = try RestRequest.make(
            Self.definition([
                "api_url": "https://api.example.com/v1/ticker?pair=BTCUSD", "auth_type": "api_key", "api_key": "k 1/2",
                "signing": .object(["query_param": "apikey"]),
            ]),
            now: Self.now
        )
        #expect(byQuery.url == "https://api.example.com/v1/ticker?pair=BTCUSD&apikey=k%201%2F2")
        #expect(byQuery.signable.header("X-API-Key") == nil)
        let bearer = try RestRequest.make(
            Self.definition(["api_url": "https://api.example.com/v1/ticker", "auth_type": "bearer", "bearer_token": "tok-abcdef"]),
            now: Self.now
        )
        #expect(bearer.signable.header("Authorization") == "Bearer tok-abcdef")
    }

    @Test func apiKeyPlacementIsValidated() throws {
        #expect(throws: ConnectorError.self) {
            try Self.definition([
                "api_url": "https://api.example.com/v1", "auth_type": "api_key", "api_key": "k",
                "signing": .object(["header": "A", "query_param": "b"]),
            ])
        }
        #expect(throws: ConnectorError.self) {
            try Self.definition([
                "api_url": "https://api.example.com/v1", "auth_type": "hmac", "api_key": "k", "api_secret": "s",
                "signing": .object(["scheme": "generic", "template": "{body}", "timestamp_format": "weeks"]),
            ])
        }
    }

    @Test func retryAfterSecondsOrHTTPDate() {
        let now = Date(timeIntervalSince1970: 1_445_412_480)  // Wed, 21 Oct 2015 07:28:00 GMT
        #expect(RestConnector.retryAfter("2", now: now) == .seconds(2))
        #expect(RestConnector.retryAfter("Wed, 21 Oct 2015 07:28:30 GMT", now: now) == .seconds(30))
        #expect(RestConnector.retryAfter("100000", now: now) == .seconds(600))
        #expect(RestConnector.retryAfter("soon", now: now) == nil)
        #expect(RestConnector.retryAfter(nil, now: now) == nil)
    }

    @Test func secretsAreRedactedFromMessages() {
        let secrets = ConnectorSecrets(apiKey: "key-abcdef", apiSecret: "s3cr3t-value", queryParams: ["token": "q/v 1"])
        let text = RestConnector.redact("HTTP 401: key-abcdef rejected, sig of s3cr3t-value, url ?token=q%2Fv%201", secrets)
        #expect(text == "HTTP 401: **** rejected, sig of ****, url ?token=****")
    }

    // MARK: REST responses (EXCHANGES.md §2.1, §2.2)

    func messages(_ frame: NormalizedFrame) -> [MarketMessage] {
        if case .messages(let messages) = frame { return messages }
        return []
    }

    @Test func okxTickerAndTradesResponses() throws {
        let ticker = try JSONValue.parse(
            #"{"code":"0","msg":"","data":[{"instType":"SPOT","instId":"BTC-USDT","last":"43250.1","lastSz":"0.01","askPx":"43250.2","askSz":"1.5","bidPx":"43250.1","bidSz":"2","ts":"1597026383085"}]}"#
        )
        let tickers = messages(try RestNormalizer(exchange: .okx, path: "/api/v5/market/ticker").normalize(ticker))
        #expect(tickers.count == 1)
        #expect(tickers.first?.messageType == .ticker)
        #expect(tickers.first?.price == "43250.1")
        #expect(tickers.first?.instrument == "BTC-USDT")
        #expect(tickers.first?.sourceID == "okx:tickers:BTC-USDT:1597026383085")
        let trades = try JSONValue.parse(
            #"{"code":"0","msg":"","data":[{"instId":"BTC-USDT","side":"sell","sz":"0.00001","px":"29963.2","tradeId":"242720720","ts":"1654161646974"},{"instId":"BTC-USDT","side":"buy","sz":"0.1","px":"29963.3","tradeId":"242720721","ts":"1654161646975"}]}"#
        )
        let records = messages(try RestNormalizer(exchange: .okx, path: "/api/v5/market/trades").normalize(trades))
        #expect(records.map(\.sourceID) == ["okx:trades:BTC-USDT:242720720", "okx:trades:BTC-USDT:242720721"])
        #expect(records.map(\.price) == ["29963.2", "29963.3"])
        let error = try JSONValue.parse(#"{"code":"50011","msg":"Too Many Requests"}"#)
        #expect(
            try RestNormalizer(exchange: .okx, path: "/api/v5/market/trades").normalize(error) == .exchangeError("OKX error 50011: Too Many Requests")
        )
    }

    @Test func binanceTickerBookTickerAndTradesResponses() throws {
        let price = messages(
            try RestNormalizer(exchange: .binance, path: "/api/v3/ticker/price").normalize(
                try JSONValue.parse(#"{"symbol":"LTCBTC","price":"4.00000200"}"#)
            )
        )
        #expect(price.first?.price == "4.00000200")
        #expect(price.first?.instrument == "LTC-BTC")
        let list = messages(
            try RestNormalizer(exchange: .binance, path: "/api/v3/ticker/price").normalize(
                try JSONValue.parse(#"[{"symbol":"LTCBTC","price":"4.00000200"},{"symbol":"ETHBTC","price":"0.07946600"}]"#)
            )
        )
        #expect(list.map(\.instrument) == ["LTC-BTC", "ETH-BTC"])
        let book = messages(
            try RestNormalizer(exchange: .binance, path: "/api/v3/ticker/bookTicker").normalize(
                try JSONValue.parse(
                    #"{"symbol":"LTCBTC","bidPrice":"4.00000000","bidQty":"431.00000000","askPrice":"4.00000200","askQty":"9.00000000"}"#
                )
            )
        )
        #expect(book.first?.price == "4.00000000")
        #expect(book.first?.fields["ask_price"] == "4.00000200")
        let trades = messages(
            try RestNormalizer(exchange: .binance, path: "/api/v3/trades", query: ["symbol": "BTCUSDT"]).normalize(
                try JSONValue.parse(
                    #"[{"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012","time":1499865549590,"isBuyerMaker":true,"isBestMatch":true}]"#
                )
            )
        )
        #expect(trades.first?.sourceID == "binance:trade:BTCUSDT:28457")
        #expect(trades.first?.side == "sell")
        #expect(trades.first?.quantity == "12.00000000")
        let error = try JSONValue.parse(#"{"code":-1121,"msg":"Invalid symbol."}"#)
        #expect(
            try RestNormalizer(exchange: .binance, path: "/api/v3/ticker/price").normalize(error)
                == .exchangeError("Binance error -1121: Invalid symbol.")
        )
    }

    @Test func customResponsesUseFieldMapping() throws {
        let response = try JSONValue.parse(#"{"result":{"pair":"BTCUSD","quote":{"last":"65000.5"}}}"#)
        let normalizer = RestNormalizer(
            exchange: .custom,
            path: "/v1/quote",
            fieldMapping: .object(["instrument": "$.result.pair", "price": "$.result.quote.last"])
        )
        let records = messages(try normalizer.normalize(response))
        #expect(records.first?.price == "65000.5")
        #expect(records.first?.instrument == "BTC-USD")
    }
}
