import Foundation
import Logging
import Synchronization

/// The live state of one running connector, shared by its runtime (writer) and the supervisor
/// (reader, which persists it periodically).
public final class ConnectorRuntimeState: Sendable {
    public let connectorID: String
    public let counters: ConnectorCounters
    private let state = Mutex<(status: ConnectorState, lastError: String?, sessionID: String?)>((.starting, nil, nil))

    init(connectorID: String, counters: ConnectorCounters) {
        self.connectorID = connectorID
        self.counters = counters
    }

    public var status: ConnectorState { state.withLock { $0.status } }
    public var lastError: String? { state.withLock { $0.lastError } }

    func set(_ status: ConnectorState, error: String? = nil) {
        state.withLock { state in
            state.status = status
            if let error { state.lastError = error }
        }
    }

    func setSession(_ sessionID: String) { state.withLock { $0.sessionID = sessionID } }

    func setError(_ error: String) { state.withLock { $0.lastError = error } }

    private let stopState = Mutex<(requested: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    /// Set by the runtime's task when it has returned.
    let ended = Atomic<Bool>(false)
    /// A WebSocket connection is up: a stop drains it (nothing else is worth waiting for).
    let connected = Atomic<Bool>(false)

    /// A stop was asked for: the connector closes its connection in good order (reading what is
    /// already on its way) instead of dropping it.
    var stopRequested: Bool { stopState.withLock { $0.requested } }

    func requestStop() {
        let waiters = stopState.withLock { state in
            state.requested = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once a stop is requested, or the task is cancelled.
    func waitForStop() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = stopState.withLock { state in
                    if state.requested || Task.isCancelled { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiters = stopState.withLock { state in
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    /// The `connector_status` row values right now.
    func snapshot() -> StatusUpdate {
        let (status, lastError, sessionID) = state.withLock { ($0.status, $0.lastError, $0.sessionID) }
        let lastMessage = counters.lastMessageMs.load(ordering: .relaxed)
        var metrics: JSONObject = [
            "messages_received": .number(counters.received.load(ordering: .relaxed)),
            "messages_stored": .number(counters.stored.load(ordering: .relaxed)),
            "messages_failed": .number(counters.failed.load(ordering: .relaxed)),
            "messages_duplicate": .number(counters.duplicates.load(ordering: .relaxed)),
            "messages_dropped": .number(counters.dropped.load(ordering: .relaxed)),
            "messages_rejected": .number(counters.rejected.load(ordering: .relaxed)),
            "last_rejection": counters.lastRejection.withLock { $0.map { .string($0.detail) } ?? .null },
            "messages_per_second": .number(String(format: "%.1f", counters.sampleRate())),
            "reconnects": .number(counters.reconnects.load(ordering: .relaxed)),
            "disconnected_ms": .number(counters.disconnectedMillis.load(ordering: .relaxed)),
            "trades_missed_while_disconnected": .number(counters.missedWhileDisconnected.load(ordering: .relaxed)),
            "last_message_at": lastMessage == 0 ? .null : .string(Timestamp.format(Date(timeIntervalSince1970: Double(lastMessage) / 1000))),
            "session_id": .optional(sessionID),
        ]
        if counters.polls.load(ordering: .relaxed) > 0 {
            metrics["polls"] = .number(counters.polls.load(ordering: .relaxed))
            metrics["poll_successes"] = .number(counters.pollSuccesses.load(ordering: .relaxed))
            metrics["poll_failures"] = .number(counters.pollFailures.load(ordering: .relaxed))
            metrics["poll_extraction_failures"] = .number(counters.extractionFailures.load(ordering: .relaxed))
            metrics["last_response_time_ms"] = .number(String(format: "%.1f", Double(counters.lastResponseMicros.load(ordering: .relaxed)) / 1000))
        }
        return StatusUpdate(connectorID: connectorID, status: status, lastError: lastError, performanceMetrics: .object(metrics))
    }
}

/// Everything a connector runtime needs: its definition, where accepted messages go, and its live state.
public struct ConnectorContext: Sendable {
    public let connectorID: String
    public let definition: ConnectorDefinition
    public let buffer: IngestBuffer
    /// Where REST poll results go (to `api_connector_data`).
    public let pollRows: PollRows
    /// Where rejected records are recorded; nil keeps them only in the counters and the log.
    public let deadLetters: DeadLetterQueue?
    public let state: ConnectorRuntimeState
    public let settings: ConnectorRuntimeSettings
    public let logger: Logger
    /// With several instances: the epoch of this instance's lease on the connector, carried by
    /// every message it receives (see `PendingMessage.lease`).
    public var lease: Int64?

    /// Normalizes one text frame and hands its messages to the pipeline without waiting.
    /// Malformed frames and bad values are counted, logged and skipped. `wakingTheWriter`: see
    /// `IngestBuffer.append(contentsOf:wakingTheWriter:)`.
    func ingest(_ frame: some Collection<UInt8>, normalizer: Normalizer, session: inout IngestSession, wakingTheWriter: Bool = true) {
        let counters = state.counters
        let normalized: NormalizedFrame
        do {
            normalized = try normalizer.normalize(text: frame)
        } catch {
            counters.failed.add(1, ordering: .relaxed)
            session.logFailure("skipped a frame that could not be normalized", error: error, logger: logger)
            return
        }
        accept(normalized, session: &session, wakingTheWriter: wakingTheWriter)
    }

    /// Hands normalized messages to the pipeline without waiting; records an exchange error.
    /// Records that could not be stored (see `MarketMessage.rejection`) are counted as
    /// rejected, logged at a bounded rate and skipped; the others of the frame go on.
    func accept(_ normalized: NormalizedFrame, session: inout IngestSession, wakingTheWriter: Bool = true) {
        let counters = state.counters
        switch normalized {
        case .control:
            return
        case .exchangeError(let message):
            state.setError(message)
            logger.warning("exchange reported an error", metadata: ["error_type": "exchange_error", "error": "\(message)"])
            return
        case .messages(let messages), .partial(let messages, _):
            let now = Date()
            var accepted: [PendingMessage] = []
            accepted.reserveCapacity(messages.count)
            var rejected: [DeadLetter] = []
            defer { deadLetters?.append(rejected) }
            if case .partial(_, let malformed) = normalized {
                for record in malformed {
                    let rejection = Rejection(reason: "malformed_record", detail: record.reason)
                    counters.reject(rejection)
                    session.logFailure("rejected a record that could not be normalized", error: rejection, logger: logger)
                    rejected.append(
                        DeadLetter(
                            connectorID: connectorID,
                            sourceID: nil,
                            sessionID: session.sessionID,
                            stage: .normalize,
                            reason: rejection.reason,
                            error: rejection.detail,
                            raw: record.raw.serialized,
                            timestamp: now
                        )
                    )
                }
            }
            for message in messages {
                if let rejection = message.rejection {
                    counters.reject(rejection)
                    session.logFailure("rejected a record that cannot be stored", error: rejection, logger: logger)
                    rejected.append(
                        DeadLetter(
                            connectorID: connectorID,
                            sourceID: message.sourceID,
                            sessionID: session.sessionID,
                            stage: .normalize,
                            reason: rejection.reason,
                            error: rejection.detail,
                            raw: message.raw.serialized,
                            timestamp: now
                        )
                    )
                    continue
                }
                session.sequence += 1
                if message.messageType == .trade, let sourceID = message.sourceID {
                    session.noteTrade(sourceID, exchange: message.exchange, counters: counters)
                }
                let sourceID = message.sourceID ?? "\(session.sessionID):\(session.sequence)"
                accepted.append(
                    PendingMessage(
                        connectorID: connectorID,
                        sessionID: session.sessionID,
                        sourceID: sourceID,
                        message: message,
                        receivedAt: now,
                        lease: lease
                    )
                )
            }
            guard !accepted.isEmpty else { return }
            counters.received.add(accepted.count, ordering: .relaxed)
            counters.lastMessageMs.store(Int64(now.timeIntervalSince1970 * 1000), ordering: .relaxed)
            let refused = buffer.append(contentsOf: accepted, wakingTheWriter: wakingTheWriter)
            if refused > 0 {
                counters.dropped.add(refused, ordering: .relaxed)
                session.logFailure("ingest buffer full: messages dropped", error: NormalizationError("\(refused) refused"), logger: logger)
            }
        }
    }
}

extension ConnectorContext {
    /// Back-pressure: while the spool is at its size limit, reads nothing more (the exchange sees
    /// its socket stall), with why in the connector's `last_error`. Checks every 50 ms, calling
    /// `tick` each time (the keepalive must not take the pause for a dead connection).
    func pauseWhileSpoolFull(tick: () -> Void = {}) async {
        guard !buffer.hasRoom else { return }
        spoolFull()
        let started = ContinuousClock.now
        while !buffer.hasRoom, !Task.isCancelled {
            tick()
            try? await Task.sleep(for: .milliseconds(50))
        }
        spoolHasRoom(pausedSince: started)
    }

    /// Says why reading stopped: in the connector's `last_error` and the log.
    func spoolFull() {
        state.setError("paused: the spool is full (SPOOL_MAX_BYTES); reading resumes as the database catches up")
        logger.warning("spool full: the connector stopped reading until the database catches up", metadata: ["error_type": "backpressure"])
    }

    func spoolHasRoom(pausedSince started: ContinuousClock.Instant) {
        logger.notice("spool has room again: reading resumes", metadata: ["paused_ms": "\((ContinuousClock.now - started).inMilliseconds)"])
    }
}

/// Per-connection ingest state: the session id, the fallback sequence and log rate limiting.
struct IngestSession {
    let sessionID: String
    var sequence = 0
    var lastFailureLog: ContinuousClock.Instant?
    var suppressedFailures = 0

    /// The last trade id per instrument seen on this connection (WebSocket sessions only; see
    /// `noteTrade`), kept here without a lock and handed to the connector when the connection ends.
    var lastTradeIDs: [Substring: Int64]?

    init(sessionID: String, countsTradeGaps: Bool = false) {
        self.sessionID = sessionID
        if countsTradeGaps { lastTradeIDs = [:] }
    }

    /// Exchanges whose trade ids count up by one per instrument, so a jump across a reconnect is
    /// what the exchange sent while the connector was away.
    static let sequentialTradeIDs: Set<Exchange> = [.okx, .binance, .coinbase]
    /// Instruments tracked per connector at most (a hostile exchange could name millions).
    static let maximumTrackedInstruments = 10_000

    /// Reads the trade id from `source_id` (`…:<instrument>:<id>`). The first trade of an
    /// instrument on this connection adds the jump since the connector's previous connection to
    /// `missedWhileDisconnected`; later ones only update this session's last id (no lock per
    /// message). Ids that are negative, not numbers, or jump by more than Int64 holds are ignored.
    mutating func noteTrade(_ sourceID: String, exchange: Exchange, counters: ConnectorCounters) {
        guard var seen = lastTradeIDs, Self.sequentialTradeIDs.contains(exchange), let colon = sourceID.lastIndex(of: ":"),
            let id = Int64(sourceID[sourceID.index(after: colon)...]), id >= 0
        else { return }
        let instrument = sourceID[..<colon]
        lastTradeIDs = nil  // no copy of the dictionary while it changes
        defer { lastTradeIDs = seen }
        if let last = seen[instrument] {
            seen[instrument] = max(last, id)
            return
        }
        guard seen.count < Self.maximumTrackedInstruments else { return }
        let previous = counters.lastTradeIDs.withLock { $0[String(instrument)] }
        if let previous, id > previous, previous >= 0 {
            counters.missedWhileDisconnected.add(Int(clamping: id - previous - 1), ordering: .relaxed)
        }
        seen[instrument] = id
    }

    /// The connection ended: its last trade ids become the connector's, for the next connection's gaps.
    func publishTradeIDs(to counters: ConnectorCounters) {
        guard let lastTradeIDs, !lastTradeIDs.isEmpty else { return }
        counters.lastTradeIDs.withLock { last in
            for (instrument, id) in lastTradeIDs where last.count < Self.maximumTrackedInstruments || last[String(instrument)] != nil {
                last[String(instrument)] = max(last[String(instrument)] ?? id, id)
            }
        }
    }

    /// Logs at most one failure per second, with the number suppressed since.
    mutating func logFailure(_ message: Logger.Message, error: any Error, logger: Logger) {
        let now = ContinuousClock.now
        if let last = lastFailureLog, now - last < .seconds(1) {
            suppressedFailures += 1
            return
        }
        logger.warning(
            message,
            metadata: ["error_type": "\(type(of: error))", "error": "\(error)", "suppressed_since_last": "\(suppressedFailures)"]
        )
        lastFailureLog = now
        suppressedFailures = 0
    }
}
