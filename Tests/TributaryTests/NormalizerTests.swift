import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// Normalizers against the exchanges' documented messages (EXCHANGES.md).
@Suite struct NormalizerTests {
    /// The single message a frame must normalize to.
    func message(_ exchange: Exchange, _ text: String, mapping: JSONValue? = nil) throws -> MarketMessage {
        let frame = try Normalizer(exchange: exchange, fieldMapping: mapping).normalize(text: Array(text.utf8))
        guard case .messages(let messages) = frame, messages.count == 1 else {
            Issue.record("expected one message, got \(frame)")
            throw NormalizationError("no message")
        }
        return messages[0]
    }

    @Test func okxTrade() throws {
        let trade = try message(
            .okx,
            #"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"3"}]}"#
        )
        #expect(trade.messageType == .trade)
        #expect(trade.instrument == "BTC-USDT")
        #expect(trade.price == "42219.9")
        #expect(trade.quantity == "0.12060306")
        #expect(trade.side == "buy")
        #expect(trade.sourceID == "okx:trades:BTC-USDT:130639474")
        #expect(trade.exchangeTimestampMs == 1_630_048_897_897)
        #expect(trade.json["instrument"] == "BTC-USDT")
        #expect(trade.json["raw"]?["count"] == "3")
    }

    @Test func okxTickerKeepsEmptyBidAsNull() throws {
        let ticker = try message(
            .okx,
            #"{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instType":"SPOT","instId":"BTC-USDT","last":"9999.99","lastSz":"0.1","askPx":"9999.99","askSz":"11","bidPx":"","bidSz":"5","open24h":"9000","high24h":"10000","low24h":"8888.88","volCcy24h":"2222","vol24h":"2222","sodUtc0":"2222","sodUtc8":"2222","ts":"1597026383085"}]}"#
        )
        #expect(ticker.messageType == .ticker)
        #expect(ticker.price == "9999.99")
        #expect(ticker.fields["ask_price"] == "9999.99")
        #expect(ticker.fields["bid_price"] == .null, "an empty bid is unknown, not zero")
    }

    @Test func okxBooksAndCandles() throws {
        let book = try message(
            .okx,
            #"{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","checksum":-855196043,"prevSeqId":-1,"seqId":123456}]}"#
        )
        #expect(book.messageType == .book)
        #expect(book.price == "8476.97")
        #expect(book.sourceID == "okx:books:BTC-USDT:123456")
        #expect(book.fields["action"] == "snapshot")
        let candle = try message(
            .okx,
            #"{"arg":{"channel":"candle1D","instId":"BTC-USDT"},"data":[["1597026383085","8533.02","8553.74","8527.17","8548.26","45247","529.5858061","5529.5858061","1"]]}"#
        )
        #expect(candle.messageType == .candle)
        #expect(candle.fields["open"] == "8533.02")
        #expect(candle.fields["close"] == "8548.26")
        #expect(candle.fields["closed"] == true)
        #expect(candle.exchangeTimestampMs == 1_597_026_383_085)
    }

    @Test func okxEventsAreControlOrErrors() throws {
        let okx = Normalizer(exchange: .okx)
        #expect(
            try okx.normalize(text: Array(#"{"event":"subscribe","arg":{"channel":"tickers","instId":"BTC-USDT"},"connId":"a4d3ae55"}"#.utf8))
                == .control("subscribe")
        )
        #expect(try okx.normalize(text: Array("pong".utf8)) == .control("keepalive"))
        let error = try okx.normalize(text: Array(#"{"event":"error","code":"60018","msg":"Wrong URL or channel","connId":"x"}"#.utf8))
        #expect(error == .exchangeError("OKX error 60018: Wrong URL or channel"))
        #expect(throws: NormalizationError.self) { try okx.normalize(text: Array(#"{"arg":{"channel":"trades"}"#.utf8)) }
        #expect(throws: NormalizationError.self) { try okx.normalize(text: Array("not json".utf8)) }
    }

    @Test func binanceTradeRawAndCombined() throws {
        let raw = #"{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}"#
        let trade = try message(.binance, raw)
        #expect(trade.instrument == "BNB-BTC")
        #expect(trade.symbol == "BNBBTC")
        #expect(trade.side == "sell", "buyer is maker: the taker sold")
        #expect(trade.sourceID == "binance:trade:BNBBTC:12345")
        #expect(trade.price == "0.001")
        let combined = try message(.binance, #"{"stream":"bnbbtc@trade","data":\#(raw)}"#)
        #expect(combined == trade)
    }

    @Test func binanceOtherStreams() throws {
        let agg = try message(
            .binance,
            #"{"e":"aggTrade","E":1,"s":"BTCUSDT","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":2,"m":false,"M":true}"#
        )
        #expect(agg.sourceID == "binance:aggTrade:BTCUSDT:12345")
        #expect(agg.side == "buy")
        #expect(agg.instrument == "BTC-USDT")
        let book = try message(.binance, #"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#)
        #expect(book.channel == "bookTicker")
        #expect(book.messageType == .ticker)
        #expect(book.fields["ask_price"] == "25.36520000")
        #expect(book.exchangeTimestampMs == nil)
        let depth = try message(.binance, #"{"e":"depthUpdate","E":1,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}"#)
        #expect(depth.messageType == .book)
        #expect(depth.price == "0.0024")
        let kline = try message(
            .binance,
            #"{"e":"kline","E":123456789,"s":"BNBBTC","k":{"t":123400000,"T":123460000,"s":"BNBBTC","i":"1m","f":100,"L":200,"o":"0.0010","c":"0.0020","h":"0.0025","l":"0.0015","v":"1000","n":100,"x":false,"q":"1.0000","V":"500","Q":"0.500","B":"123456"}}"#
        )
        #expect(kline.messageType == .candle)
        #expect(kline.fields["high"] == "0.0025")
        #expect(kline.fields["trade_count"] == .number(100))
        #expect(try Normalizer(exchange: .binance).normalize(text: Array(#"{"result":null,"id":1}"#.utf8)) == .control("subscription response"))
        #expect(
            try Normalizer(exchange: .binance).normalize(text: Array(#"{"code":2,"msg":"Invalid request: unknown variant","id":1}"#.utf8))
                == .exchangeError("Binance error 2: Invalid request: unknown variant")
        )
    }

    @Test func bybitTradesAndTickers() throws {
        let trade = try message(
            .bybit,
            #"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick","i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false}]}"#
        )
        #expect(trade.instrument == "BTC-USDT")
        #expect(trade.side == "buy")
        #expect(trade.price == "16578.50")
        #expect(trade.sourceID == "bybit:publicTrade:BTCUSDT:20f43950-d8dd-5b31-9112-a178eb6023af")
        let ticker = try message(
            .bybit,
            #"{"topic":"tickers.BTCUSDT","ts":1672305380595,"type":"snapshot","cs":496622841,"data":{"symbol":"BTCUSDT","lastPrice":"16597.00","highPrice24h":"17000","lowPrice24h":"16000","prevPrice24h":"16500","volume24h":"1","turnover24h":"2","price24hPcnt":"0.01"}}"#
        )
        #expect(ticker.price == "16597.00")
        let failure = try Normalizer(exchange: .bybit).normalize(
            text: Array(#"{"success":false,"ret_msg":"Invalid topic: invalid.topic.BTCUSDT","conn_id":"x","op":"subscribe"}"#.utf8)
        )
        #expect(failure == .exchangeError("Bybit subscribe failed: Invalid topic: invalid.topic.BTCUSDT"))
        #expect(
            try Normalizer(exchange: .bybit).normalize(text: Array(#"{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}"#.utf8))
                == .control("ping")
        )
    }

    @Test func coinbaseTickerMatchAndAdvancedTrade() throws {
        let ticker = try message(
            .coinbase,
            #"{"type":"ticker","sequence":3262786978,"product_id":"BTC-USD","price":"4388.01000000","side":"buy","last_size":"0.03000000","best_bid":"4388","best_ask":"4388.01","trade_id":20153558,"time":"2017-09-02T17:05:49.250000Z"}"#
        )
        #expect(ticker.price == "4388.01000000")
        #expect(ticker.exchangeTimestampMs == 1_504_371_949_250)
        let match = try message(
            .coinbase,
            #"{"type":"match","trade_id":10,"sequence":50,"maker_order_id":"a","taker_order_id":"b","time":"2014-11-07T08:19:27.028459Z","product_id":"BTC-USD","size":"5.23512","price":"400.23","side":"sell"}"#
        )
        #expect(match.messageType == .trade)
        #expect(match.side == "buy", "a match's side is the maker's")
        #expect(match.sourceID == "coinbase:match:BTC-USD:10")
        let batch = try Normalizer(exchange: .coinbase).normalize(
            text: Array(
                #"{"channel":"market_trades","client_id":"","timestamp":"2026-04-07T14:30:02.8Z","sequence_num":0,"events":[{"type":"update","trades":[{"trade_id":"995098700","product_id":"BTC-USD","price":"68900.50","size":"0.00150000","side":"BUY","time":"2026-04-07T14:30:02.789012345Z"},{"trade_id":"995098701","product_id":"BTC-USD","price":"68900.51","size":"1","side":"SELL","time":"2026-04-07T14:30:02.789Z"}]}]}"#
                    .utf8
            )
        )
        guard case .messages(let trades) = batch else { throw NormalizationError("expected trades") }
        #expect(trades.map(\.price) == ["68900.50", "68900.51"])
        #expect(trades[0].side == "buy")
        #expect(trades[0].exchangeTimestampMs == Timestamp.parseMilliseconds("2026-04-07T14:30:02.789Z"))
        #expect(try Normalizer(exchange: .coinbase).normalize(text: Array(#"{"type":"heartbeat","sequence":90}"#.utf8)) == .control("heartbeat"))
    }

    @Test func krakenV2TradesKeepNumericPricesExact() throws {
        let trade = try message(
            .kraken,
            #"{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell","price":68012.30000000001,"qty":0.00100000,"ord_type":"market","trade_id":74893,"timestamp":"2024-05-07T12:25:37.283734Z"}]}"#
        )
        #expect(trade.instrument == "BTC-USD")
        #expect(trade.symbol == "BTC/USD")
        #expect(trade.price == "68012.30000000001")
        #expect(trade.quantity == "0.00100000")
        #expect(trade.sourceID == "kraken:trade:BTC/USD:74893")
        #expect(try Normalizer(exchange: .kraken).normalize(text: Array(#"{"channel":"heartbeat"}"#.utf8)) == .control("heartbeat"))
    }

    @Test func customMappingAndFallbacks() throws {
        let mapped = try message(
            .custom,
            #"{"payload":{"rows":[{"sym":"eth_usdc","px":"3000.5","amt":"2"}]}}"#,
            mapping: .object(["instrument": "$.payload.rows[0].sym", "price": "$.payload.rows[0].px", "quantity": "$['payload'].rows[0].amt"])
        )
        #expect(mapped.instrument == "ETH-USDC")
        #expect(mapped.price == "3000.5")
        #expect(mapped.quantity == "2")
        let fallback = try message(.custom, #"{"data":[{"instId":"SOL-USDT","px":"150.25"}]}"#)
        #expect(fallback.instrument == "SOL-USDT")
        #expect(fallback.price == "150.25")
        #expect(throws: NormalizationError.self) { try Normalizer(exchange: .custom).normalize(text: Array(#"{"hello":"world"}"#.utf8)) }
    }

    @Test(arguments: [
        ("BTCUSDT", "BTC-USDT"), ("ethbtc", "ETH-BTC"), ("BTC-USDT-SWAP", "BTC-USDT"), ("XBT/USD", "BTC-USD"), ("BNBFDUSD", "BNB-FDUSD"),
        ("BTC-USDT", "BTC-USDT"), ("btc-usdt", "BTC-USDT"), ("XBT-USD", "BTC-USD"), ("ETH-XDG", "ETH-DOGE"), ("1INCH-USDT", "1INCH-USDT"),
    ])
    func instrumentsNormalize(_ symbol: String, _ expected: String) {
        #expect(Instruments.normalize(symbol) == expected)
    }

    @Test func jsonPathParsesItsSubset() {
        #expect(JSONPath("$.data[0].px") != nil)
        #expect(JSONPath("data.px") == nil)
        #expect(JSONPath("$.a[x]") == nil)
        #expect(JSONPath("$.data[1]")?.evaluate(.object(["data": .array(["a", "b"])])) == "b")
    }
}
