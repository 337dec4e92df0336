import Foundation
import Logging
import ServiceLifecycle

/// A record that was received but will never be stored: refused at normalization (a value no
/// store keeps) or by the database itself (found by bisecting its batch). Kept in `dead_letters`
/// with what is needed to look at it, and shown by `GET /api/dead-letters`.
public struct DeadLetter: Sendable, Equatable {
    /// Where it was refused.
    public enum Stage: String, Sendable {
        case normalize
        case store
    }

    /// The longest `raw` and `error` kept; longer text is cut and marked.
    public static let maximumRawBytes = 65_536
    public static let maximumErrorBytes = 1024

    public var connectorID: String
    public var sourceID: String?
    public var sessionID: String?
    public var stage: Stage
    /// A short, stable code (`price_not_decimal`, `store_refused`).
    public var reason: String
    public var error: String
    /// The record as received (for `store`, the stored `data` text, which holds it under `raw`).
    public var raw: String
    public var timestamp: Date

    /// Every text is made storable here: NUL characters (which PostgreSQL refuses in `text`)
    /// become U+FFFD and long texts are cut, so a dead letter can itself always be written.
    public init(
        connectorID: String,
        sourceID: String?,
        sessionID: String?,
        stage: Stage,
        reason: String,
        error: String,
        raw: String,
        timestamp: Date = Date()
    ) {
        self.connectorID = Self.storable(connectorID, limit: MarketMessage.maximumKeyLength)
        self.sourceID = sourceID.map { Self.storable($0, limit: MarketMessage.maximumKeyLength) }
        self.sessionID = sessionID.map { Self.storable($0, limit: MarketMessage.maximumKeyLength) }
        self.stage = stage
        self.reason = Self.storable(reason, limit: 64)
        self.error = Self.storable(error, limit: Self.maximumErrorBytes)
        self.raw = Self.storable(raw, limit: Self.maximumRawBytes)
        self.timestamp = timestamp
    }

    /// `text` without NUL characters, cut to at most `limit` UTF-8 bytes and marked `…[truncated]` when cut.
    static func storable(_ text: String, limit: Int) -> String {
        var text = text.utf8.contains(0) ? text.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : text
        if text.utf8.count > limit {
            // A character cut in half decodes as U+FFFD.
            text = String(decoding: text.utf8.prefix(limit), as: UTF8.self) + "…[truncated]"
        }
        return text
    }
}

/// Dead letters on their way to the store: producers (connectors, the batch writer) never wait;
/// a service writes them in bulk. Bounded twice: past `capacity` waiting letters the oldest are
/// dropped and counted (`tributary_dead_letters_dropped_total`), and the table keeps the newest
/// `retained` letters (older ones are deleted after every 1,000 written), while every rejection
/// stays counted on its connector.
public final class DeadLetterQueue: Service {
    public static let defaultCapacity = 10_000

    let queue: SignalledQueue<DeadLetter>
    let store: any MessageSink
    /// How many dead letters the table keeps (`MAX_DEAD_LETTERS`).
    let retained: Int
    let logger: Logger

    public init(store: any MessageSink, capacity: Int = DeadLetterQueue.defaultCapacity, retained: Int = 100_000, logger: Logger) {
        self.queue = SignalledQueue(capacity: capacity, overflow: .dropOldest)
        self.store = store
        self.retained = retained
        self.logger = logger
    }

    /// Letters dropped because the queue was full.
    public var droppedCount: Int { queue.droppedCount }

    public func append(_ letters: [DeadLetter]) {
        guard !letters.isEmpty else { return }
        queue.append(contentsOf: letters)
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            var delay = Duration.milliseconds(100)
            var sincePrune = 0
            while true {
                let letters = await queue.take(upTo: 500)
                if letters.isEmpty { break }
                // A transient failure is retried (bounded by shutdown); a refused letter is logged and let go.
                while true {
                    do {
                        try await store.insertDeadLetters(letters)
                        delay = .milliseconds(100)
                        sincePrune += letters.count
                        if sincePrune >= 1000 {
                            sincePrune = 0
                            try? await store.pruneDeadLetters(keeping: retained)
                        }
                        break
                    } catch {
                        if (error as? StoreError)?.isPermanent == true || Task.isShuttingDownGracefully {
                            logger.error("could not store dead letters", metadata: ["error": "\(error)", "letters": "\(letters.count)"])
                            break
                        }
                        logger.warning("storing dead letters failed; retrying", metadata: ["error": "\(error)"])
                        try? await Task.sleep(for: delay)
                        delay = min(delay * 2, .seconds(5))
                    }
                }
            }
        } onGracefulShutdown: {
            self.queue.close()
        }
    }
}
