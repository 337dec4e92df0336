import Foundation
import Tributary

/// One fuzz target for every parser that takes hostile input. The first byte of an input picks
/// what the rest goes to:
/// 0 the JSON parser and writer, 1–6 a WebSocket normalizer (OKX, Binance, Bybit, Coinbase,
/// Kraken, custom with a field mapping), 7 a REST normalizer, 8 query parameters and cursors,
/// 9 a connector body (create, then update of an existing connector).
/// Whatever is accepted must also pass the storage checks without trapping, and a record that
/// passes them must serialize to JSON that parses again.
enum FuzzTargets {
    static let mapping: JSONValue = ["instrument": "$.s", "price": "$.p[0]", "quantity": "$.q", "timestamp": "$.t"]
    static let existing = try? ConnectorDefinition.parse(
        ["name": "base", "connector_type": "rest", "api_url": "https://api.example.com/x", "auth_type": "bearer", "bearer_token": "t-1234567890"],
        existing: nil
    )

    static func run(_ input: UnsafeBufferPointer<UInt8>) {
        guard let selector = input.first else { return }
        let rest = UnsafeBufferPointer(rebasing: input[1...])
        switch selector % 10 {
        case 0:
            guard let value = try? JSONValue.parse(rest) else { return }
            let text = value.serialized
            guard (try? JSONValue.parse(text)) == value else { fatalError("JSON did not survive a round trip: \(text)") }
            _ = value.storageProblem
        case 1...6:
            let exchanges: [Exchange] = [.okx, .binance, .bybit, .coinbase, .kraken, .custom]
            let exchange = exchanges[Int(selector % 10) - 1]
            let normalizer = Normalizer(exchange: exchange, fieldMapping: exchange == .custom ? mapping : nil)
            check(try? normalizer.normalize(text: rest))
        case 7:
            guard let response = try? JSONValue.parse(rest) else { return }
            for path in ["/api/v5/market/trades", "/api/v5/market/tickers", "/api/v3/ticker/24hr", "/api/v3/trades", "/x"] {
                check(
                    try? RestNormalizer(exchange: path.hasPrefix("/api/v5") ? .okx : .binance, path: path, query: ["symbol": "BTCUSDT"]).normalize(
                        response
                    )
                )
            }
        case 8:
            let text = String(decoding: rest, as: UTF8.self)
            _ = Timestamp.parseParameter(text)
            if let cursor = PageCursor(encoded: text) {
                guard PageCursor(encoded: cursor.encoded) == cursor else { fatalError("cursor did not survive a round trip: \(text)") }
            }
        default:
            guard let body = try? JSONValue.parse(rest) else { return }
            _ = try? ConnectorDefinition.parse(body, existing: nil)
            _ = try? ConnectorDefinition.parse(body, existing: existing)
        }
    }

    /// Every record either is rejected for a reason or can be stored: its JSON parses back.
    static func check(_ frame: NormalizedFrame?) {
        guard let messages = frame?.marketMessages else { return }
        for message in messages where message.rejection == nil {
            let data = message.serializedJSON
            guard (try? JSONValue.parse(data)) != nil else { fatalError("stored data is not JSON: \(data)") }
        }
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzTargets.run(UnsafeBufferPointer(start: data, count: size))
    return 0
}
#else
/// Without libFuzzer: runs every file named (or found in the directories named) through the
/// targets once, so the committed corpus is a regression test of any build.
@main struct ReplayCorpus {
    static func main() throws {
        var count = 0
        for argument in CommandLine.arguments.dropFirst() {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory) else { continue }
            let files =
                isDirectory.boolValue
                ? try FileManager.default.contentsOfDirectory(atPath: argument).sorted().map { argument + "/" + $0 } : [argument]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                [UInt8](data).withUnsafeBufferPointer { FuzzTargets.run($0) }
                count += 1
            }
        }
        print("replayed \(count) inputs without a crash")
    }
}
#endif
