import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import Synchronization

/// The connector management use cases behind the API: validation, secret sealing, persistence
/// and lifecycle state. The HTTP layer only translates requests and responses.
public struct ConnectorService: Sendable {
    let store: any ConnectorRepository
    let secretBox: SecretBox
    let logger: Logger
    /// Runs the connectors; without one (tools, tests of the API alone) actions only record state.
    let supervisor: ConnectorSupervisor?
    /// The most connectors there may be (`MAX_CONNECTORS`).
    let maxConnectors: Int
    /// Refuses `/test` of one connector more often than once per this interval.
    let testInterval: Duration
    let lastTests = TestRateLimiter()

    public init(
        store: any ConnectorRepository,
        secretBox: SecretBox,
        supervisor: ConnectorSupervisor? = nil,
        maxConnectors: Int = 1000,
        testInterval: Duration = .seconds(2),
        logger: Logger
    ) {
        self.store = store
        self.secretBox = secretBox
        self.supervisor = supervisor
        self.maxConnectors = maxConnectors
        self.testInterval = testInterval
        self.logger = logger
    }

    /// Refuses at once a URL whose host is an address literal the outbound policy forbids (a host
    /// name is checked on every connection instead, since what it resolves to can change).
    func checkTarget(_ definition: ConnectorDefinition) throws {
        let policy = supervisor?.settings.outbound ?? OutboundPolicy()
        guard let host = URL(string: definition.apiURL)?.host() else { return }
        if let address = CIDR.address(OutboundPolicy.bare(host)), let problem = policy.refusal(of: address) {
            throw ConnectorError.invalid([FieldError(field: "api_url", problem: "must not point at \(problem)")])
        }
    }

    /// Creates a connector from an API body; `demo` marks one `serve --demo` made.
    public func create(_ body: JSONValue, demo: Bool = false) async throws -> ConnectorView {
        let definition = try ConnectorDefinition.parse(body, existing: nil)
        try checkTarget(definition)
        let total = try await store.listConnectors(limit: 1, offset: 0).total
        guard total < maxConnectors else { throw ConnectorError.limitReached(total) }
        let connectorID = "conn_" + Base64.hex(SymmetricKey(size: .bits128).withUnsafeBytes { Array($0.prefix(8)) })
        let record = try await store.insertConnector(
            NewConnector(connectorID: connectorID, config: definition.config, sealedSecrets: try seal(definition.secrets), demo: demo)
        )
        logger.info("connector created", metadata: ["connector_id": "\(connectorID)"])
        return view(record)
    }

    /// The demo connector named in `body`, created (marked demo) or updated to `body`, and started.
    /// A connector of that name that the demo did not create is left alone.
    public func startDemo(_ body: JSONValue) async throws -> ConnectorView {
        let name = body["name"]?.stringValue ?? ""
        let existing = try await store.listConnectors(limit: maxConnectors, offset: 0).connectors.first { $0.config.name == name }
        guard let existing else {
            let created = try await create(body, demo: true)
            return try await perform(.start, on: created.record.connectorID)
        }
        guard existing.demo else {
            throw ConnectorError.invalid([FieldError(field: "name", problem: "\(name) is taken by a connector the demo did not create")])
        }
        _ = try await update(existing.connectorID, body: body)
        return try await perform(.start, on: existing.connectorID)
    }

    /// After a key rotation: re-encrypts the secrets of every connector that has one not sealed
    /// under the current key (opening it with any configured key); returns how many connectors
    /// were rewritten. Fails on a secret no configured key opens, naming the connector.
    public func resealSecrets() async throws -> Int {
        var resealed = 0
        var offset = 0
        while true {
            let page = try await store.listConnectors(limit: 500, offset: offset)
            for record in page.connectors {
                let sealed = record.sealedSecrets
                let tokens = [sealed.apiKey, sealed.apiSecret, sealed.passphrase, sealed.bearerToken, sealed.headers, sealed.queryParams]
                guard tokens.contains(where: { $0.map { !secretBox.isCurrent($0) } ?? false }) else { continue }
                let definition: ConnectorDefinition
                do {
                    definition = try self.definition(of: record)
                } catch {
                    throw ConfigError("connector \(record.connectorID) (\(record.config.name)): \(error)")
                }
                _ = try await store.updateConnector(id: record.connectorID, config: record.config, sealedSecrets: try seal(definition.secrets))
                resealed += 1
            }
            offset += page.connectors.count
            if page.connectors.isEmpty || offset >= page.total { return resealed }
        }
    }

    public func list(limit: Int, offset: Int) async throws -> (connectors: [ConnectorView], total: Int) {
        let page = try await store.listConnectors(limit: limit, offset: offset)
        var views: [ConnectorView] = []
        for record in page.connectors { views.append(await view(live(record))) }
        return (views, page.total)
    }

    public func get(_ id: String) async throws -> ConnectorView {
        view(await live(try await record(id)))
    }

    public func update(_ id: String, body: JSONValue) async throws -> ConnectorView {
        let existing = try await record(id)
        let current = try definition(of: existing)
        let definition = try ConnectorDefinition.parse(body, existing: current)
        try checkTarget(definition)
        guard let updated = try await store.updateConnector(id: id, config: definition.config, sealedSecrets: try seal(definition.secrets)) else {
            throw ConnectorError.notFound(id)
        }
        logger.info("connector updated", metadata: ["connector_id": "\(id)"])
        if updated.desiredState == .running { await supervisor?.apply(updated) }
        return view(await live(updated))
    }

    public func delete(_ id: String) async throws {
        await supervisor?.remove(id)
        guard try await store.deleteConnector(id: id) else { throw ConnectorError.notFound(id) }
        logger.info("connector deleted", metadata: ["connector_id": "\(id)"])
    }

    /// A lifecycle action. Records the desired state and the status it leads to; idempotent.
    public func perform(_ action: LifecycleAction, on id: String) async throws -> ConnectorView {
        let existing = try await record(id)
        let (desired, status, restarted): (DesiredState, ConnectorState, Bool) =
            switch action {
            case .start:
                existing.desiredState == .running ? (.running, existing.status.status, false) : (.running, .starting, true)
            case .stop: (.stopped, .stopped, false)
            case .restart: (.running, .starting, true)
            }
        guard let updated = try await store.setState(id: id, desired: desired, status: status, restarted: restarted) else {
            throw ConnectorError.notFound(id)
        }
        logger.info("connector \(action.rawValue)", metadata: ["connector_id": "\(id)"])
        // Starting a connector that already runs changes nothing; starting one that gave up retries it.
        let active = await supervisor?.state(of: id).map { $0.status != .error } ?? false
        if !(action == .start && existing.desiredState == .running && active) {
            await supervisor?.apply(updated)
        }
        return view(await live(updated))
    }

    /// One request without storing anything: a REST poll, or for a WebSocket connector a connect,
    /// subscribe and first data message, within `timeout`. Reports what came back, secrets redacted.
    public func test(_ id: String, timeout: Duration = .seconds(10)) async throws -> JSONValue {
        let definition = try definition(of: try await record(id))
        if let wait = lastTests.claim(id, interval: testInterval) { throw ConnectorError.testedTooRecently(wait) }
        let started = ContinuousClock.now
        func elapsed() -> JSONValue { .number(String((ContinuousClock.now - started).inMilliseconds)) }
        func records(_ messages: [MarketMessage]) -> JSONValue { .array(messages.map(\.record)) }
        switch definition.connectorType {
        case .rest:
            var settings = supervisor?.settings ?? ConnectorRuntimeSettings()
            settings.restTimeout = min(settings.restTimeout, timeout)
            let poll = await RestConnector.poll(definition, settings: settings)
            var result: JSONObject = [
                "ok": .bool(poll.outcome == .ok), "connector_type": "rest", "status_code": poll.statusCode.map { .number($0) } ?? .null,
                "response_time_ms": .number(String(format: "%.1f", poll.responseTimeMs)),
            ]
            switch poll.outcome {
            case .ok:
                let messages: [MarketMessage]
                messages = poll.normalized?.marketMessages ?? []
                result["record_count"] = .number(messages.count)
                result["records"] = records(messages)
                if let problem = poll.extractionProblem { result["extraction_error"] = .string(problem) }
            case .invalid(let problem), .retry(let problem, _), .rejected(let problem):
                result["error"] = .string(problem)
            }
            return .object(result)
        case .websocket:
            let settings = supervisor?.settings ?? ConnectorRuntimeSettings()
            do {
                let messages = try await withDeadline(timeout, "the WebSocket test") { [logger] in
                    try await WebSocketConnector.probe(definition, settings: settings, logger: logger)
                }
                return .object([
                    "ok": true, "connector_type": "websocket", "response_time_ms": elapsed(), "record_count": .number(messages.count),
                    "records": records(messages),
                ])
            } catch {
                let problem = error is StoreError ? "no data message within \(timeout)" : RestConnector.redact("\(error)", definition.secrets)
                return .object(["ok": false, "connector_type": "websocket", "response_time_ms": elapsed(), "error": .string(problem)])
            }
        }
    }

    /// The connector's decrypted definition, for runtimes.
    public func definition(of record: ConnectorRecord) throws -> ConnectorDefinition {
        try ConnectorDefinition(record: record, secretBox: secretBox)
    }

    /// The record with the running connector's live status and metrics, fresher than the stored row.
    func live(_ record: ConnectorRecord) async -> ConnectorRecord {
        guard let state = await supervisor?.state(of: record.connectorID) else { return record }
        let snapshot = state.snapshot()
        var record = record
        record.status.status = snapshot.status
        record.status.lastError = snapshot.lastError
        record.status.performanceMetrics = snapshot.performanceMetrics
        return record
    }

    func record(_ id: String) async throws -> ConnectorRecord {
        guard let record = try await store.connector(id: id) else { throw ConnectorError.notFound(id) }
        return record
    }

    func seal(_ secrets: ConnectorSecrets) throws -> SealedSecrets {
        func seal(_ value: String?) throws -> String? { try value.map { try secretBox.seal($0) } }
        func sealMap(_ map: [String: String]) throws -> String? {
            guard !map.isEmpty else { return nil }
            let object = JSONObject(map.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.string($0.value)) })
            return try secretBox.seal(JSONValue.object(object).serialized)
        }
        return SealedSecrets(
            apiKey: try seal(secrets.apiKey),
            apiSecret: try seal(secrets.apiSecret),
            passphrase: try seal(secrets.passphrase),
            bearerToken: try seal(secrets.bearerToken),
            headers: try sealMap(secrets.headers),
            queryParams: try sealMap(secrets.queryParams)
        )
    }

    /// The API view; a secret that cannot be decrypted (a missing rotated key) shows as `"****"`.
    func view(_ record: ConnectorRecord) -> ConnectorView {
        do {
            return ConnectorView(record: record, secrets: try definition(of: record).secrets)
        } catch {
            logger.warning(
                "connector secrets could not be decrypted",
                metadata: ["connector_id": "\(record.connectorID)", "error_type": "\(type(of: error))", "error": "\(error)"]
            )
            return ConnectorView(record: record, secrets: nil)
        }
    }
}

/// A lifecycle action from `POST /api/connectors/{id}/start|stop|restart`.
public enum LifecycleAction: String, Sendable, CaseIterable {
    case start
    case stop
    case restart
}

/// Connector use-case failures, mapped by the HTTP layer to 404 and 400.
public enum ConnectorError: Error, Sendable {
    case notFound(String)
    case invalid([FieldError])
    /// `MAX_CONNECTORS` connectors exist already (409).
    case limitReached(Int)
    /// `/test` of this connector ran moments ago; allowed again after this long (429).
    case testedTooRecently(Duration)
}

extension ConnectorDefinition {
    /// A stored connector with its secrets decrypted.
    public init(record: ConnectorRecord, secretBox: SecretBox) throws {
        func open(_ token: String?) throws -> String? { try token.map { try secretBox.open($0) } }
        func openMap(_ token: String?) throws -> [String: String] {
            guard let text = try open(token), case .object(let object) = try JSONValue.parse(text) else { return [:] }
            return object.reduce(into: [:]) { $0[$1.key] = $1.value.stringValue }
        }
        let sealed = record.sealedSecrets
        self.init(
            config: record.config,
            secrets: ConnectorSecrets(
                apiKey: try open(sealed.apiKey),
                apiSecret: try open(sealed.apiSecret),
                passphrase: try open(sealed.passphrase),
                bearerToken: try open(sealed.bearerToken),
                headers: try openMap(sealed.headers),
                queryParams: try openMap(sealed.queryParams)
            )
        )
    }
}

/// When each connector was last tested, so `/test` (an outbound request on demand) cannot be
/// used to hammer a host. Bounded: entries older than a minute are swept once it holds 10,000.
final class TestRateLimiter: Sendable {
    private let last = Mutex<[String: ContinuousClock.Instant]>([:])

    /// Records a test of `id` now and returns nil, or returns how long until one is allowed.
    func claim(_ id: String, interval: Duration) -> Duration? {
        let now = ContinuousClock.now
        return last.withLock { last in
            if let previous = last[id], now - previous < interval { return interval - (now - previous) }
            if last.count >= 10_000 { last = last.filter { now - $0.value < .seconds(60) } }
            last[id] = now
            return nil
        }
    }
}
