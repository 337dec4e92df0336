import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

@Suite struct JSONValueTests {
    @Test(arguments: ["0.00000001", "65432.123456789012345678901234567890", "-1e-7", "1E+30", "123456789012345678901234567890", "0"])
    func numbersKeepTheirExactText(_ literal: String) throws {
        let value = try JSONValue.parse("{\"px\":\(literal)}")
        #expect(value["px"] == .number(literal))
        #expect(value.serialized == "{\"px\":\(literal)}")
    }

    @Test func objectsKeepKeyOrderAndCompareWithoutIt() throws {
        let value = try JSONValue.parse(#"{"b":1,"a":[true,false,null],"c":{"d":"e"}}"#)
        #expect(value.objectValue?.keys == ["b", "a", "c"])
        #expect(value == (try JSONValue.parse(#"{"c":{"d":"e"},"a":[true,false,null],"b":1}"#)))
        #expect(value.serialized == #"{"b":1,"a":[true,false,null],"c":{"d":"e"}}"#)
    }

    @Test func stringEscapesRoundTrip() throws {
        let value = try JSONValue.parse(#""quote \" backslash \\ slash \/ tab \t newline \n unicode \u00e9 \ud83d\ude80 ctrl \u0001""#)
        #expect(value == .string("quote \" backslash \\ slash / tab \t newline \n unicode é 🚀 ctrl \u{01}"))
        #expect(try JSONValue.parse(value.serialized) == value)
    }

    @Test(arguments: [
        ("", "unexpected end of input"),
        ("{", "expected a string key"),
        ("{\"a\" 1}", "expected ':'"),
        ("[1,]", "unexpected character"),
        ("01", "unexpected text after the JSON value"),
        ("1.", "invalid number"),
        ("-", "invalid number"),
        ("\"abc", "unterminated string"),
        ("\"\\x\"", "invalid escape"),
        ("\"\\ud800\"", "unpaired surrogate"),
        ("tru", "unexpected end of input"),
        ("nul!", "invalid literal"),
        ("{} {}", "unexpected text after the JSON value"),
    ])
    func malformedInputIsRejectedWithAReason(_ text: String, _ reason: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
        do {
            _ = try JSONValue.parse(text)
        } catch {
            #expect(error.reason == reason)
        }
    }

    /// Strings long enough for the eight-byte skip: every ASCII byte in every position of a
    /// word, and runs of UTF-8 around it, come back as they were and never raw below 0x20.
    @Test func everyByteIsEscapedWhereverItStands() throws {
        for position in 0..<17 {
            for value in 0...127 {
                var bytes = Array("abcdefghijklmnopqrstuvwxy".utf8)
                bytes[position] = UInt8(value)
                let text = String(decoding: bytes, as: UTF8.self) + "ü✓"
                let serialized = JSONValue.string(text).serialized
                #expect(try JSONValue.parse(serialized) == .string(text), "byte \(value) at \(position)")
                #expect(!serialized.utf8.contains { $0 < 0x20 }, "byte \(value) at \(position)")
                // Escaped as two bytes (`\"`, `\\`, `\t`, `\n`, `\r`), six (`\u00XX`), or not at all.
                let extra = [0x22, 0x5C, 0x09, 0x0A, 0x0D].contains(value) ? 1 : value < 0x20 ? 5 : 0
                #expect(serialized.utf8.count == text.utf8.count + 2 + extra, "byte \(value) at \(position)")
            }
        }
    }

    @Test func deepNestingIsBounded() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
        let fine = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect((try? JSONValue.parse(fine)) != nil)
    }

    @Test func invalidUTF8IsRejected() {
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x22, 0xFF, 0xFE, 0x22]) }
        // A truncated two-byte sequence after ASCII, and a lone continuation byte.
        #expect(throws: JSONParseError.self) { try JSONValue.parse(Array("\"ab".utf8) + [0xC3, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONValue.parse(Array("\"ab".utf8) + [0x80, 0x22]) }
    }

    @Test func objectWriterWritesWhatAssigningIntoAnObjectWould() {
        func members(_ sink: inout some JSONMemberSink) {
            sink.string("price", "1.50")
            sink.string("side", nil)
            sink.number("n", "7")
            sink.string("quote", "say \"hi\"\n")
        }
        let overrides: JSONObject = ["side": "buy", "extra": [1, "x"], "n": .null]
        var object = JSONObject()
        members(&object)
        for (key, value) in overrides { object[key] = value }
        var writer = JSONObjectWriter(after: "[", overrides: overrides)
        members(&writer)
        #expect(writer.finish(suffix: "]") == "[" + JSONValue.object(object).serialized + "]")
        #expect(JSONValue.object(object).serialized == #"{"price":"1.50","side":"buy","n":null,"quote":"say \"hi\"\n","extra":[1,"x"]}"#)
    }

    @Test func storedDataIsTheMessageJSON() throws {
        let message = MarketMessage(
            exchange: .okx,
            channel: "tickers",
            messageType: .ticker,
            instrument: "BTC-USDT",
            symbol: "BTC-USDT",
            price: "43250.1",
            exchangeTimestampMs: 1_597_026_383_085,
            fields: ["best_bid": "43250.0", "price": "43250.10", "raw": "shadowed"],
            raw: ["instId": "BTC-USDT", "last": "43250.1"]
        )
        #expect(try JSONValue.parse(message.serializedJSON) == message.json)
        #expect(try JSONValue.parse(message.serializedJSON)["raw"] == ["instId": "BTC-USDT", "last": "43250.1"])
        // Keys in jsonb order, nested too: PostgreSQL stores them so and need not sort them again.
        #expect(
            message.serializedJSON
                == #"{"raw":{"last":"43250.1","instId":"BTC-USDT"},"side":null,"price":"43250.10","symbol":"BTC-USDT","channel":"tickers","#
                + #""best_bid":"43250.0","exchange":"okx","quantity":null,"instrument":"BTC-USDT","message_type":"ticker","#
                + #""exchange_timestamp_ms":1597026383085}"#
        )
        let plain = MarketMessage(exchange: .binance, channel: "trade", messageType: .trade, raw: .null)
        #expect(try JSONValue.parse(plain.serializedJSON) == plain.json)
    }

    @Test func keysAreWrittenInJSONBOrder() throws {
        // Shorter first, then by UTF-8 bytes (so "Z" < "a", and "é" after every ASCII letter).
        let value = try JSONValue.parse(#"{"bb":1,"a":[{"yx":0,"é":2,"z":1}],"ab":{"c":3,"B":2},"Zz":null}"#)
        var output: [UInt8] = []
        value.writeInKeyOrder(to: &output)
        #expect(String(decoding: output, as: UTF8.self) == #"{"a":[{"z":1,"yx":0,"é":2}],"Zz":null,"ab":{"B":2,"c":3},"bb":1}"#)
    }

    @Test func stringsKeepTheirText() throws {
        #expect(try JSONValue.parse(#"["BTC-USDT","Zürich €","a\"b"]"#) == .array(["BTC-USDT", "Zürich €", "a\"b"]))
    }
}
