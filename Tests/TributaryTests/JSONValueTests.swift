import Testing

@testable import Tributary

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

    @Test func deepNestingIsBounded() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
        let fine = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect((try? JSONValue.parse(fine)) != nil)
    }

    @Test func invalidUTF8IsRejected() {
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x22, 0xFF, 0xFE, 0x22]) }
    }
}
