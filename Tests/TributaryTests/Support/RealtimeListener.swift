import Foundation
import HummingbirdWSClient
import Logging
import Synchronization

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// A realtime API client for tests: connects, records every message, and lets a test wait for them.
final class RealtimeListener: Sendable {
    final class Log: Sendable {
        let messages = Mutex<[JSONValue]>([])
    }

    let log = Log()
    let task: Task<Void, any Error>

    /// Connects to `/api/realtime` (with `query`) and returns once the `connected` message arrived.
    init(port: Int, query: String = "", slowReader: Duration? = nil) async throws {
        let (connected, continuation) = AsyncStream.makeStream(of: Void.self)
        let log = self.log
        task = Task {
            defer { continuation.finish() }
            try await WebSocketClient.connect(
                url: "ws://127.0.0.1:\(port)/api/realtime\(query.isEmpty ? "" : "?" + query)",
                configuration: .init(maxFrameSize: 1 << 20),
                logger: Logger(label: "realtime-listener")
            ) { inbound, _, _ in
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard case .text(let text) = message, let json = try? JSONValue.parse(text) else { continue }
                    log.messages.withLock { $0.append(json) }
                    if json["type"] == "connected" { continuation.yield() }
                    if let slowReader { try await Task.sleep(for: slowReader) }
                }
            }
        }
        var iterator = connected.makeAsyncIterator()
        guard await iterator.next() != nil else {
            _ = try await task.value
            throw TestSetupError("the realtime socket closed before sending \"connected\"")
        }
    }

    var all: [JSONValue] { log.messages.withLock { $0 } }

    var dataUpdates: [JSONValue] { log.messages.withLock { $0.filter { $0["type"] == "data_update" }.compactMap { $0["data"] } } }

    /// Waits until `count` data updates arrived or `timeout` passed; returns them.
    func waitForUpdates(_ count: Int, timeout: Duration = .seconds(30)) async throws -> [JSONValue] {
        let deadline = ContinuousClock.now + timeout
        while dataUpdates.count < count, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        return dataUpdates
    }

    func close() {
        task.cancel()
    }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}
