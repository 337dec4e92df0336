import AsyncHTTPClient
import Logging
import ServiceLifecycle
import Synchronization

/// Runs the connectors that should be running. Resumes them at startup from their persisted
/// `desired_state`, starts, stops and restarts them on API actions, and writes their live status
/// and metrics to `connector_status` every `statusInterval` (not once per message). Each connector
/// runs in its own task: a failing connector never affects the others.
public actor ConnectorSupervisor: Service {
    let store: any ConnectorRepository & SchemaMigrations
    let definition: @Sendable (ConnectorRecord) throws -> ConnectorDefinition
    let buffer: IngestBuffer
    let pollRows: PollRows
    let deadLetters: DeadLetterQueue?
    let metrics: PipelineMetrics
    let settings: ConnectorRuntimeSettings
    let logger: Logger
    var running: [String: (task: Task<Void, Never>, state: ConnectorRuntimeState)] = [:]
    /// Where the running connectors are kept for a start without the database; nil: nowhere.
    let snapshot: ConnectorSnapshot?
    /// The records of the running connectors (what `snapshot` holds).
    var records: [String: ConnectorRecord] = [:]
    /// Whether `serve --demo` runs: it starts the demo connectors itself. Otherwise any demo
    /// connector still meant to run is set to stopped at start, since its fake exchange is gone.
    let demoMode: Bool
    /// With several instances on one PostgreSQL: decides which connectors run here (leases);
    /// API changes go to it instead of starting or stopping anything directly.
    let placement = Mutex<(any ConnectorPlacement)?>(nil)
    var coordinator: (any ConnectorPlacement)? { placement.withLock { $0 } }
    /// Set once shutdown began: nothing starts any more (a coordinator's period may still run).
    var stopping = false
    /// Stops and deletions asked for through the API, counted; `stopAsked[id]` is the count at
    /// the connector's last one. A coordinator notes the count before it reads the desired states
    /// (`noteStops`), and does not start a connector stopped since (`run(_:lease:unlessStoppedAfter:)`):
    /// what it read may predate the stop.
    private var stopsAsked: UInt64 = 0
    private var stopAsked: [String: UInt64] = [:]
    private var lastNoted: UInt64 = 0
    /// The last status write: each waits for the one before (see `writeStatuses`).
    private var statusWrite: Task<Void, any Error>?

    public init(
        store: any ConnectorRepository & SchemaMigrations,
        definition: @escaping @Sendable (ConnectorRecord) throws -> ConnectorDefinition,
        buffer: IngestBuffer,
        pollRows: PollRows,
        deadLetters: DeadLetterQueue? = nil,
        metrics: PipelineMetrics,
        settings: ConnectorRuntimeSettings,
        snapshot: ConnectorSnapshot? = nil,
        demoMode: Bool = false,
        logger: Logger
    ) {
        self.snapshot = snapshot
        self.demoMode = demoMode
        self.store = store
        self.definition = definition
        self.buffer = buffer
        self.pollRows = pollRows
        self.deadLetters = deadLetters
        self.metrics = metrics
        self.settings = settings
        self.logger = logger
    }

    /// Hands placement to `coordinator` (call before the services run).
    public nonisolated func coordinate(with coordinator: any ConnectorPlacement) { placement.withLock { $0 = coordinator } }

    public func run() async throws {
        if coordinator == nil { await resume() }
        while !Task.isShuttingDownGracefully, await sleepUnlessShuttingDown(for: settings.statusInterval) {
            await persistStatuses()
        }
        stopping = true
        let entries = Array(running.values)
        running = [:]
        await drain(entries)
        try? await writeStatuses(entries.map { $0.state.snapshot() })
        logger.info("connectors stopped")
    }

    /// Starts the connectors whose desired state is running, once the schema is migrated (services
    /// start before the migration runs); retries while the database is unavailable. If it does not
    /// answer at first, the connectors of the snapshot start meanwhile (their messages spool); once
    /// it answers, its records win: missing ones start, ones it no longer runs stop. Demo
    /// connectors are never resumed (see `demoMode`).
    func resume() async {
        var delay = Duration.milliseconds(50)
        var first = true
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                try await store.checkReady()
                let all = try await store.runningConnectors()
                let wanted = all.filter { !$0.demo }
                if !demoMode { try await leaveStopped(demos: all.filter(\.demo)) }
                let ids = Set(wanted.map(\.connectorID))
                // A demo connector is the demo's to start and stop.
                for id in running.keys where !ids.contains(id) && records[id]?.demo != true { await stop(id) }
                for record in wanted where running[record.connectorID] == nil { start(record) }
                logger.info("resumed connectors", metadata: ["count": "\(running.count)"])
                return
            } catch {
                if first, let saved = snapshot?.load().filter({ !$0.demo }), !saved.isEmpty {
                    for record in saved where running[record.connectorID] == nil { start(record) }
                    logger.warning(
                        "database unavailable at start: started the connectors of the snapshot; what they receive is spooled",
                        metadata: ["count": "\(saved.count)", "error_type": "\(type(of: error))", "error": "\(error)"]
                    )
                }
                first = false
                if delay >= .seconds(1) {
                    logger.warning(
                        "waiting for the database to resume connectors",
                        metadata: ["error_type": "\(type(of: error))", "error": "\(error)"]
                    )
                }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }

    /// Records demo connectors a plain `serve` found meant to run (the demo was killed, or an API
    /// call started one) as stopped, and says so.
    func leaveStopped(demos: [ConnectorRecord]) async throws {
        guard !demos.isEmpty else { return }
        for record in demos {
            _ = try await store.setState(id: record.connectorID, desired: .stopped, status: .stopped, restarted: false)
        }
        logger.notice(
            "demo connectors left stopped: they stream from the fake exchange of `tributary serve --demo`, which starts them again",
            metadata: ["connectors": "\(demos.map(\.config.name).sorted().joined(separator: ","))"]
        )
    }

    /// Rewrites the snapshot after the running set changed.
    func saveSnapshot() {
        guard let snapshot else { return }
        do {
            try snapshot.save(records.values.sorted { $0.connectorID < $1.connectorID })
        } catch {
            logger.warning("could not save the connector snapshot", metadata: ["error": "\(error)", "path": "\(snapshot.path)"])
        }
    }

    /// Brings the runtime in line with the record: (re)starts it with this configuration when
    /// its desired state is running, stops it otherwise.
    public func apply(_ record: ConnectorRecord) async {
        if record.desiredState == .stopped { noteStopAsked(record.connectorID) }
        if let coordinator {
            // A stop takes effect here at once (the API answers with the stopped status); a start
            // or a changed configuration is the owner's to apply, whichever instance it is.
            if record.desiredState == .stopped { await stop(record.connectorID) }
            await coordinator.changed(record.connectorID)
            return
        }
        await stop(record.connectorID)
        if record.desiredState == .running { start(record) }
    }

    /// Stops a connector that is being deleted and forgets its counters.
    public func remove(_ connectorID: String) async {
        noteStopAsked(connectorID)
        await stop(connectorID, persist: false)
        metrics.remove(connectorID)
        await coordinator?.changed(connectorID)
    }

    /// The count of stops asked for so far, for a coordinator about to read the desired states
    /// (its periods run one after another). Forgets the stops that an earlier period already read
    /// past, so `stopAsked` holds only those of the last two periods.
    func noteStops() -> UInt64 {
        stopAsked = stopAsked.filter { $0.value > lastNoted }
        lastNoted = stopsAsked
        return stopsAsked
    }

    private func noteStopAsked(_ connectorID: String) {
        stopsAsked += 1
        stopAsked[connectorID] = stopsAsked
    }

    /// (Re)starts `record` here under lease `epoch` (the coordinator's call), unless a stop or a
    /// deletion of it was asked for after `stopsAsked` was `noted` (the coordinator read `record`
    /// after noting it, so the stop may not be in it): then nothing changes here, and the next
    /// period reads the stop.
    func run(_ record: ConnectorRecord, lease epoch: Int64, unlessStoppedAfter noted: UInt64) async {
        if let asked = stopAsked[record.connectorID], asked > noted {
            logger.info("not started: stopped since its desired state was read", metadata: ["connector_id": "\(record.connectorID)"])
            return
        }
        await stop(record.connectorID)
        if record.desiredState == .running { start(record, lease: epoch) }
    }

    /// Stops a connector here (the coordinator's call: its lease is lost or handed over).
    func stopHere(_ connectorID: String) async { await stop(connectorID) }

    /// The connectors running here.
    var runningIDs: Set<String> { Set(running.keys) }

    /// The record a connector running here was started with (its lease included).
    func record(of connectorID: String) -> ConnectorRecord? { records[connectorID] }

    /// The connectors the snapshot says ran here last, with their lease epochs (for a start
    /// while the database is down).
    func snapshotLeases() -> [(record: ConnectorRecord, lease: Int64)] {
        (snapshot?.load() ?? []).filter { !$0.demo }.compactMap { record in record.lease.map { (record, $0) } }
    }

    /// Starts what the snapshot holds (the database is down at start; see `snapshotLeases`).
    func startFromSnapshot() -> Int {
        var started = 0
        for (record, lease) in snapshotLeases() where running[record.connectorID] == nil {
            start(record, lease: lease)
            if running[record.connectorID] != nil { started += 1 }
        }
        return started
    }

    /// The live state of a running connector, if it runs.
    public func state(of connectorID: String) -> ConnectorRuntimeState? { running[connectorID]?.state }

    func start(_ record: ConnectorRecord, lease: Int64? = nil) {
        guard !stopping else { return }
        var record = record
        record.lease = lease
        let id = record.connectorID
        var logger = self.logger
        logger[metadataKey: "connector_id"] = "\(id)"
        let state = ConnectorRuntimeState(connectorID: id, counters: metrics.counters(for: id))
        let task: Task<Void, Never>
        do {
            let definition = try definition(record)
            let context = ConnectorContext(
                connectorID: id,
                definition: definition,
                buffer: buffer,
                pollRows: pollRows,
                deadLetters: deadLetters,
                state: state,
                settings: settings,
                logger: logger,
                lease: lease
            )
            switch definition.connectorType {
            case .websocket:
                task = Task {
                    await WebSocketConnector(context: context).run()
                    state.ended.store(true, ordering: .releasing)
                }
            case .rest:
                task = Task {
                    await RestConnector(context: context).run()
                    state.ended.store(true, ordering: .releasing)
                }
            }
        } catch {
            state.set(.error, error: "connector secrets could not be decrypted: \(error)")
            task = Task {}
            state.ended.store(true, ordering: .releasing)
        }
        running[id] = (task, state)
        records[id] = record
        saveSnapshot()
        logger.info("connector started")
    }

    func stop(_ connectorID: String, persist: Bool = true) async {
        guard let entry = running.removeValue(forKey: connectorID) else { return }
        records[connectorID] = nil
        saveSnapshot()
        await drain([entry])
        if persist {
            try? await writeStatuses([entry.state.snapshot()])
        }
        logger.info("connector stopped", metadata: ["connector_id": "\(connectorID)"])
    }

    /// Asks every connector in `entries` to stop, waits up to `stopDrainTime` for those with a
    /// live WebSocket connection to finish on their own, then cancels those still running (and
    /// says so: what their exchange had sent that they had not read yet is lost).
    func drain(_ entries: [(task: Task<Void, Never>, state: ConnectorRuntimeState)]) async {
        for entry in entries { entry.state.requestStop() }
        let deadline = ContinuousClock.now + settings.stopDrainTime
        func draining(_ state: ConnectorRuntimeState) -> Bool {
            state.connected.load(ordering: .acquiring) && !state.ended.load(ordering: .acquiring)
        }
        while entries.contains(where: { draining($0.state) }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        for entry in entries where draining(entry.state) {
            logger.warning(
                "a stopping connector was still reading what the exchange sent before the close; its connection was cut",
                metadata: [
                    "connector_id": "\(entry.state.connectorID)", "error_type": "stop_drain_timeout",
                    "drain_time": "\(settings.stopDrainTime)",
                ]
            )
        }
        for entry in entries {
            entry.task.cancel()
            await entry.task.value
            if entry.state.status != .error { entry.state.set(.stopped) }
        }
    }

    func persistStatuses() async {
        let updates = running.values.map { $0.state.snapshot() }
        do {
            try await writeStatuses(updates)
        } catch {
            logger.warning("could not write connector status", metadata: ["error_type": "\(type(of: error))", "error": "\(error)"])
        }
    }

    /// Writes `updates` after every status write begun before (in the order they were begun), so
    /// a periodic write of a connector's running status, slow to reach the database, cannot land
    /// after the stopped status of a stop that came later and undo it.
    private func writeStatuses(_ updates: [StatusUpdate]) async throws {
        let previous = statusWrite
        let write = Task { [store] in
            _ = await previous?.result
            try await store.updateStatuses(updates)
        }
        statusWrite = write
        try await write.value
    }
}
