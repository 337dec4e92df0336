import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// Polls an HTTP API every `polling_interval` ms, one request at a time (a slow response delays
/// the next poll, never stacks a second one), authenticated afresh for each request. Each answered
/// poll stores one `api_connector_data` row (through `PollRows`, durable), and its records go through the pipeline into
/// `websocket_messages` with stable `source_id`s. 429 and 5xx, timeouts and connection errors back
/// off with jitter (honouring `Retry-After`); repeated 4xx stop the connector with the API's answer
/// as `last_error`; a body that is not JSON or too large is an error and polling goes on.
struct RestConnector: Sendable {
    let context: ConnectorContext

    /// What one poll came to.
    enum Outcome: Sendable, Equatable {
        case ok
        /// Answered, but unusable (not JSON, too large, not normalizable): recorded, polling goes on.
        case invalid(String)
        /// Worth retrying after a back-off: 408, 429, 5xx, timeouts, connection errors.
        case retry(String, after: Duration?)
        /// Refused (other 4xx): a few in a row stop the connector.
        case rejected(String)
    }

    /// One request and its response, before anything is stored (also what `/test` returns).
    struct Poll: Sendable {
        var outcome: Outcome
        var statusCode: Int?
        var responseTimeMs: Double
        var body: JSONValue?
        var normalized: NormalizedFrame?
        /// Why no market data could be read from an answered poll (best effort: the row is kept).
        var extractionProblem: String?
        /// An error the API reported inside a 2xx JSON body (OKX `code` ≠ 0).
        var apiError: String?

        /// Whether the poll gets an `api_connector_data` row: every 2xx answer with a JSON body.
        var isAnswered: Bool { (200..<300).contains(statusCode ?? 0) && body != nil }
    }

    func run() async {
        let definition = context.definition
        let settings = context.settings
        let state = context.state
        let counters = state.counters
        var retries = 0
        var rejections = 0
        while !Task.isCancelled {
            await context.pauseWhileSpoolFull()
            let started = ContinuousClock.now
            let sessionID = "poll_" + UUID().uuidString.lowercased().prefix(16)
            state.setSession(String(sessionID))
            counters.polls.add(1, ordering: .relaxed)
            let poll = await Self.poll(definition, settings: settings)
            if Task.isCancelled { break }
            counters.lastResponseMicros.store(Int(poll.responseTimeMs * 1000), ordering: .relaxed)
            var wait = .milliseconds(definition.pollingInterval) - (ContinuousClock.now - started)
            var logger = context.logger
            logger[metadataKey: "session_id"] = "\(sessionID)"
            switch poll.outcome {
            case .ok:
                counters.pollSuccesses.add(1, ordering: .relaxed)
                retries = 0
                rejections = 0
                state.set(.running)
                var session = IngestSession(sessionID: String(sessionID))
                if let normalized = poll.normalized { context.accept(normalized, session: &session) }
                if let problem = poll.extractionProblem {
                    counters.extractionFailures.add(1, ordering: .relaxed)
                    session.logFailure("poll answered without market data to extract", error: NormalizationError(problem), logger: logger)
                }
            case .invalid(let problem):
                counters.pollFailures.add(1, ordering: .relaxed)
                counters.failed.add(1, ordering: .relaxed)
                state.set(.running, error: problem)
                logger.warning("poll response recorded as an error", metadata: ["error_type": "invalid_response", "error": "\(problem)"])
            case .retry(let problem, let retryAfter):
                counters.pollFailures.add(1, ordering: .relaxed)
                retries += 1
                if retries > settings.maxReconnectAttempts {
                    state.set(.error, error: "gave up after \(settings.maxReconnectAttempts) retries; last: \(problem)")
                    logger.error("connector gave up polling", metadata: ["error_type": "retries_exhausted", "error": "\(problem)"])
                    return
                }
                state.set(.reconnecting, error: problem)
                wait = retryAfter ?? settings.backoff.delay(attempt: retries)
                logger.warning(
                    "poll failed; retrying",
                    metadata: ["error_type": "poll_failed", "error": "\(problem)", "retry_in_ms": "\(wait.inMilliseconds)"]
                )
            case .rejected(let problem):
                counters.pollFailures.add(1, ordering: .relaxed)
                rejections += 1
                if rejections >= settings.restMaxRejections {
                    state.set(.error, error: problem)
                    logger.error(
                        "connector stopped: the API keeps refusing its requests",
                        metadata: ["error_type": "rejected", "error": "\(problem)"]
                    )
                    return
                }
                state.set(.reconnecting, error: problem)
                wait = settings.backoff.delay(attempt: rejections)
                logger.warning("poll refused; retrying", metadata: ["error_type": "rejected", "error": "\(problem)"])
            }
            // Every answered poll is kept, whatever could be read from it.
            if poll.isAnswered {
                context.pollRows.append(
                    APIDataRow(
                        connectorID: context.connectorID,
                        data: Self.storable(Self.data(poll)),
                        rawResponse: Self.storable(poll.body ?? .null),
                        statusCode: poll.statusCode ?? 0,
                        responseTimeMs: poll.responseTimeMs,
                        sourceID: String(sessionID),
                        sessionID: String(sessionID),
                        timestamp: Date()
                    )
                )
            }
            if wait > .zero { try? await Task.sleep(for: wait) }
        }
    }

    /// The largest poll response or data stored as is; larger ones are cut (see `storable`).
    static let maximumStoredBytes = 1 << 20
    /// How much of a cut or unstorable response is kept, as text.
    static let keptPrefixBytes = 64 << 10

    /// `value` as JSON text both stores keep: as is when it fits `maximumStoredBytes` and holds
    /// nothing a store refuses (`JSONValue.storageProblem`); otherwise an object that says so
    /// (`"truncated": true`, the original size, why) with the first 64 KiB of the text.
    static func storable(_ value: JSONValue) -> String {
        let text = value.serialized
        let problem = value.storageProblem?.detail
        guard problem != nil || text.utf8.count > maximumStoredBytes else { return text }
        return JSONValue.object([
            "truncated": true, "bytes": .number(text.utf8.count),
            "reason": .string(problem ?? "larger than \(maximumStoredBytes) bytes"),
            // The serialized text holds NUL only escaped (\u0000), so as a string it is storable.
            "text": .string(String(decoding: text.utf8.prefix(keptPrefixBytes), as: UTF8.self)),
        ]).serialized
    }

    /// The `data` column: the normalized record, or for a response of many records all of them;
    /// with nothing extracted, `record_count` 0 and why (`extraction_error` or `api_error`).
    static func data(_ poll: Poll) -> JSONValue {
        guard let messages = poll.normalized?.marketMessages else {
            var object: JSONObject = ["record_count": .number(0)]
            if let problem = poll.extractionProblem { object["extraction_error"] = .string(problem) }
            if let error = poll.apiError { object["api_error"] = .string(error) }
            return .object(object)
        }
        let records = messages.map(\.record)
        if records.count == 1, var object = records[0].objectValue {
            object["record_count"] = .number(1)
            return .object(object)
        }
        return .object(["record_count": .number(records.count), "records": .array(records)])
    }

    /// Sends one request and classifies the answer. Never throws; secrets never reach the messages.
    /// A host name goes through the egress gate (which connects to the address it checked);
    /// an address literal, checked here, is connected to straight.
    static func poll(_ definition: ConnectorDefinition, settings: ConnectorRuntimeSettings) async -> Poll {
        let redact = { (text: String) in Self.redact(text, definition.secrets) }
        let request: RestRequest
        do {
            request = try RestRequest.make(definition, now: Date())
        } catch {
            return Poll(outcome: .rejected("\(error)"), responseTimeMs: 0)
        }
        do {
            try await settings.outbound.check(url: request.url)
        } catch {
            return Poll(outcome: .rejected(redact("\(error)")), responseTimeMs: 0)
        }
        let host = URL(string: request.url)?.host() ?? ""
        let client = settings.egress.flatMap { EgressGate.isName(host) ? $0.client : nil } ?? .connectors
        var http = HTTPClientRequest(url: request.url)
        http.method = HTTPMethod(rawValue: definition.httpMethod.rawValue)
        for (name, value) in request.signable.headers { http.headers.add(name: name, value: value) }
        if !request.signable.body.isEmpty { http.body = .bytes(ByteBuffer(string: request.signable.body)) }
        let started = ContinuousClock.now
        func elapsedMs() -> Double { Double((ContinuousClock.now - started).inMilliseconds) }
        let status: Int
        let headers: HTTPHeaders
        let bytes: ByteBuffer
        do {
            let response = try await client.execute(http, timeout: .milliseconds(settings.restTimeout.inMilliseconds))
            status = Int(response.status.code)
            headers = response.headers
            bytes = try await response.body.collect(upTo: settings.restMaxResponseBytes)
        } catch is NIOTooManyBytesError {
            return Poll(outcome: .invalid("response larger than \(settings.restMaxResponseBytes) bytes"), responseTimeMs: elapsedMs())
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            return Poll(outcome: .retry("request timed out after \(settings.restTimeout)", after: nil), responseTimeMs: elapsedMs())
        } catch {
            return Poll(outcome: .retry(redact("request failed: \(error)"), after: nil), responseTimeMs: elapsedMs())
        }
        let responseTimeMs = elapsedMs()
        let text = String(buffer: bytes)
        let body = try? JSONValue.parse(text)
        let excerpt = redact(String(text.prefix(300)))
        var poll = Poll(outcome: .ok, statusCode: status, responseTimeMs: responseTimeMs, body: body)
        switch status {
        case 200..<300:
            guard let body else {
                poll.outcome = .invalid("HTTP \(status) response is not JSON: \(excerpt)")
                return poll
            }
            let path = URLComponents(string: request.url)?.path ?? "/"
            var query: [String: String] = [:]
            for item in URLComponents(string: request.url)?.queryItems ?? [] { query[item.name] = item.value ?? "" }
            do {
                let normalized = try RestNormalizer(exchange: definition.exchange, path: path, query: query, fieldMapping: definition.fieldMapping)
                    .normalize(body)
                if case .exchangeError(let message) = normalized {
                    poll.outcome = .invalid(redact(message))
                    poll.apiError = redact(message)
                } else {
                    poll.normalized = normalized
                }
            } catch {
                // Not market data (an account balance, a custom endpoint): the answer is kept all the same.
                poll.extractionProblem = "no market data extracted: \(error.reason); set field_mapping to extract some"
            }
        case 408, 429, 500...599:
            poll.outcome = .retry("HTTP \(status): \(excerpt)", after: Self.retryAfter(headers.first(name: "Retry-After"), now: Date()))
        case 400..<500:
            poll.outcome = .rejected("HTTP \(status): \(excerpt)")
        default:
            poll.outcome = .invalid("unexpected HTTP \(status): \(excerpt)")
        }
        return poll
    }

    /// `Retry-After` as delay-seconds or an HTTP date, capped at ten minutes.
    static func retryAfter(_ value: String?, now: Date) -> Duration? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Double(value), seconds >= 0 { return .milliseconds(Int64(min(seconds, 600) * 1000)) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return .milliseconds(Int64(min(max(date.timeIntervalSince(now), 0), 600) * 1000))
    }

    /// Replaces every configured secret (keys, tokens, custom header and query values) with `****`.
    static func redact(_ text: String, _ secrets: ConnectorSecrets) -> String {
        let values =
            [secrets.apiKey, secrets.apiSecret, secrets.passphrase, secrets.bearerToken].compactMap { $0 }
            + Array(secrets.headers.values) + Array(secrets.queryParams.values)
        var redacted = text
        for value in values where value.count >= 4 {
            redacted = redacted.replacingOccurrences(of: value, with: "****")
            let encoded = SignableRequest.percentEncode(value)
            if encoded != value { redacted = redacted.replacingOccurrences(of: encoded, with: "****") }
        }
        return redacted
    }
}

extension HTTPClient {
    /// The client all REST connectors share: pooled keep-alive connections, and a refused
    /// connection fails the request at once (the poll loop does its own backing off) instead of
    /// the request waiting out its deadline while the pool retries.
    static let connectors: HTTPClient = {
        var configuration = HTTPClient.Configuration.singletonConfiguration
        configuration.connectionPool.retryConnectionEstablishment = false
        // A redirect could lead anywhere, with the connector's key headers attached: never followed.
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()
}
