import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// A local HTTP API for REST connector tests, on 127.0.0.1 and an ephemeral port. Its private
/// endpoints verify signatures the way the exchanges do (EXCHANGES.md §3) and answer 401 with the
/// exchange's error body otherwise; it also rate-limits, answers slowly, or answers badly on demand.
final class FakeAPI: Sendable {
    static let okxKey = "okx-key-0123456789"
    static let okxSecret = "okx-secret-0123456789"
    static let okxPassphrase = "okx-passphrase-1"
    static let binanceKey = "binance-key-0123456789"
    static let binanceSecret = "binance-secret-0123456789"
    static let plainKey = "plain-key-0123456789"
    static let bearerToken = "bearer-token-0123456789"

    static let okxTrades =
        #"{"code":"0","msg":"","data":[{"instId":"BTC-USDT","side":"sell","sz":"0.00001","px":"29963.123456789","tradeId":"242720720","ts":"1654161646974"},{"instId":"BTC-USDT","side":"buy","sz":"0.1","px":"29963.2","tradeId":"242720721","ts":"1654161646975"}]}"#

    struct State {
        var requests: [(path: String, at: ContinuousClock.Instant)] = []
        var inFlight = 0
        var maxInFlight = 0
        var limitedCalls = 0
    }

    let state = Mutex(State())

    func requests(_ path: String) -> [ContinuousClock.Instant] {
        state.withLock { $0.requests.filter { $0.path == path }.map(\.at) }
    }

    var maxInFlight: Int { state.withLock { $0.maxInFlight } }

    static func json(_ text: String, _ status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func application(onRunning: @escaping @Sendable (Int) async -> Void) -> some ApplicationProtocol {
        let router = Router()
        router.middlewares.add(RecordingMiddleware(api: self))
        router.get("/api/v5/market/ticker") { _, _ in
            Self.json(
                #"{"code":"0","msg":"","data":[{"instType":"SPOT","instId":"BTC-USDT","last":"43250.123456789","lastSz":"0.01","askPx":"43250.2","bidPx":"43250.1","ts":"1597026383085"}]}"#
            )
        }
        router.get("/api/v5/market/trades") { _, _ in Self.json(Self.okxTrades) }
        router.get("/private/api/v5/market/trades") { request, _ in
            let timestamp = request.headers[HTTPField.Name("OK-ACCESS-TIMESTAMP")!] ?? ""
            let requestPath = request.uri.query.map { request.uri.path + "?" + $0 } ?? request.uri.path
            let expected = RequestSigning.okxSignature(
                secret: Self.okxSecret,
                timestamp: timestamp,
                method: "GET",
                requestPath: requestPath,
                body: ""
            )
            guard request.headers[HTTPField.Name("OK-ACCESS-KEY")!] == Self.okxKey,
                request.headers[HTTPField.Name("OK-ACCESS-PASSPHRASE")!] == Self.okxPassphrase,
                timestamp.hasSuffix("Z"), timestamp.count == 24
            else { return Self.json(#"{"code":"50111","msg":"Invalid OK-ACCESS-KEY"}"#, .unauthorized) }
            guard request.headers[HTTPField.Name("OK-ACCESS-SIGN")!] == expected else {
                return Self.json(#"{"code":"50113","msg":"Invalid Sign"}"#, .unauthorized)
            }
            return Self.json(Self.okxTrades)
        }
        router.get("/private/api/v3/ticker/price") { request, _ in
            let query = request.uri.query ?? ""
            guard let range = query.range(of: "&signature="), query.contains("timestamp="),
                request.headers[HTTPField.Name("X-MBX-APIKEY")!] == Self.binanceKey,
                query[range.upperBound...] == RequestSigning.binanceSignature(secret: Self.binanceSecret, query: String(query[..<range.lowerBound]))
            else { return Self.json(#"{"code":-1022,"msg":"Signature for this request is not valid."}"#, .unauthorized) }
            return Self.json(#"{"symbol":"BTCUSDT","price":"65000.12345678"}"#)
        }
        router.get("/apikey/ticker") { request, _ in
            guard request.headers[HTTPField.Name("X-API-Key")!] == Self.plainKey else { return Self.json(#"{"error":"bad key"}"#, .unauthorized) }
            return Self.json(#"{"symbol":"ETH-USDT","price":"3500.000000001"}"#)
        }
        router.get("/bearer/ticker") { request, _ in
            guard request.headers[.authorization] == "Bearer \(Self.bearerToken)" else { return Self.json(#"{"error":"bad token"}"#, .unauthorized) }
            return Self.json(#"{"symbol":"SOL-USDT","price":"150.5"}"#)
        }
        router.get("/bearer/account") { request, _ in
            guard request.headers[.authorization] == "Bearer \(Self.bearerToken)" else { return Self.json(#"{"error":"bad token"}"#, .unauthorized) }
            return Self.json(#"{"balances":[{"asset":"BTC","free":"1.5","locked":"0"}],"updateTime":1767225600000}"#)
        }
        router.get("/limited") { _, _ in
            let call = self.state.withLock { state in
                state.limitedCalls += 1
                return state.limitedCalls
            }
            if call == 1 { return Self.json(#"{"code":"50011","msg":"Too Many Requests"}"#, .tooManyRequests, headers: [.retryAfter: "1"]) }
            return Self.json(#"{"symbol":"BTC-USDT","price":"1.25"}"#)
        }
        router.get("/slow") { _, _ in
            try await Task.sleep(for: .milliseconds(300))
            return Self.json(#"{"symbol":"BTC-USDT","price":"2.5"}"#)
        }
        router.get("/redirect") { _, _ in Response(status: .found, headers: [.location: "/apikey/ticker"]) }
        router.get("/html") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html"], body: .init(byteBuffer: ByteBuffer(string: "<html>maintenance</html>")))
        }
        router.get("/big") { _, _ in
            Self.json(#"{"symbol":"BTC-USDT","price":"1","padding":""# + String(repeating: "x", count: 64 * 1024) + #""}"#)
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "fake-api"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: Logger(label: "fake-api")
        )
    }

    func withRunning<Value: Sendable>(_ body: @Sendable (_ port: Int) async throws -> Value) async throws -> Value {
        let (portStream, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let app = application { port in portContinuation.yield(port) }
        let group = ServiceGroup(configuration: .init(services: [app], logger: Logger(label: "fake-api")))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var ports = portStream.makeAsyncIterator()
            guard let port = await ports.next() else { throw CancellationError() }
            defer { Task { await group.triggerGracefulShutdown() } }
            let value = try await body(port)
            await group.triggerGracefulShutdown()
            return value
        }
    }
}

/// Records every request with its arrival time and how many were being answered at once.
struct RecordingMiddleware<Context: RequestContext>: RouterMiddleware {
    let api: FakeAPI

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        api.state.withLock { state in
            state.requests.append((request.uri.path, .now))
            state.inFlight += 1
            state.maxInFlight = max(state.maxInFlight, state.inFlight)
        }
        defer { api.state.withLock { $0.inFlight -= 1 } }
        return try await next(request, context)
    }
}
