import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import ServiceLifecycle

/// The composition root: builds storage, secrets, the ingest pipeline, connectors and the router from one config.
///
/// - Parameter onRunning: called with the bound port once the server listens (port 0 picks a free one).
public func buildApplication(
    _ config: AppConfig,
    logger: Logger,
    onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> some ApplicationProtocol {
    let lock = try DataDirectoryLock.acquire(config.dataDirectory)
    let secretBox = try makeSecretBox(config)
    // With PostgreSQL several instances may share the database: this one gets its id.
    var instance: InstanceInfo?
    if case .postgres = config.database {
        instance = InstanceInfo(
            instanceID: try InstanceIdentity.load(dataDirectory: config.dataDirectory),
            address: config.instanceAddress ?? "\(config.host):\(config.port)",
            version: tributaryVersion
        )
    }
    let store = try await makeStore(config, instanceID: instance?.instanceID, logger: logger)
    let gate = try await EgressGate.start(policy: config.runtime.outbound, logger: logger)
    var gated = config
    gated.runtime.egress = gate
    let spool = try makeSpool(config, logger: logger)
    let pollSpool = try makeSpool(config, logger: logger, directory: "spool/polls")
    let migrator = DatabaseMigrator(store: store, logger: logger)
    let pipeline = Pipeline(
        config: gated,
        store: store,
        secretBox: secretBox,
        spool: spool,
        pollSpool: pollSpool,
        migrator: migrator,
        instance: instance,
        logger: logger
    )
    let router = buildRouter(
        config: config,
        store: store,
        service: pipeline.service,
        metrics: pipeline.exporter,
        migrator: migrator,
        instances: InstancesController(coordinator: pipeline.coordinator, supervisor: pipeline.supervisor, config: config)
    )
    // Started in this order, stopped in reverse: the demo's connectors, then the others, then the
    // writer flushes, then the coordinator hands the leases over, then the store closes.
    var services: [any Service] = [
        DataDirectoryLockService(lock: lock), gate, store, migrator, pipeline.compactor, pipeline.deadLetters,
        SpoolSyncService(spool: pollSpool), pipeline.pollRows,
    ]
    if case .postgres = config.database { services.append(PartitionMaintenance(store: store, logger: logger)) }
    if let days = config.retentionDays {
        services.append(Retention(store: store, days: days, metrics: pipeline.metrics, logger: logger))
    }
    if let coordinator = pipeline.coordinator { services.append(coordinator) }
    services += [SpoolSyncService(spool: spool), pipeline.writer, pipeline.supervisor]
    if let demo = config.demoConnectors {
        services.append(DemoConnectors(bodies: demo, service: pipeline.service, migrator: migrator, logger: logger))
    }
    let app = Application(
        router: router,
        server: ConnectionLimits(maxConnections: config.maxHTTPConnections, headerTimeout: config.httpHeaderTimeout).server(
            webSocketRouter: buildRealtimeRouter(config: config, endpoint: pipeline.realtime),
            configuration: .init(http1: .init(idleTimeout: .init(config.httpIdleTimeout)), ws: .init(maxFrameSize: 1 << 20))
        ),
        configuration: .init(address: .hostname(config.host, port: config.port), serverName: "tributary"),
        // Started in this order, shut down in reverse: connectors stop, then the writer flushes, then the store closes.
        // The server listens at once; the migrator brings the schema up to date (waiting for the database if need be).
        services: services,
        onServerRunning: { channel in
            logger.notice("Tributary is listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            // Callers (demo, bench) use the API next: they hear of the port once the schema is current.
            // Not awaited here: the server must not wait on the database to be up.
            let port = channel.localAddress?.port ?? config.port
            Task { if await migrator.waitUntilDone() { await onRunning(port) } }
        },
        logger: logger
    )
    return app
}

/// The ingest pipeline and the connector runtime around one store.
public struct Pipeline: Sendable {
    public let buffer: IngestBuffer
    public let deadLetters: DeadLetterQueue
    public let pollRows: PollRows
    public let metrics: PipelineMetrics
    public let broadcaster: Broadcaster
    public let writer: BatchWriter
    public let compactor: CandleCompactor
    public let supervisor: ConnectorSupervisor
    public let service: ConnectorService
    public let realtime: RealtimeEndpoint
    public let exporter: MetricsExporter
    /// With several instances on PostgreSQL: which connectors run here.
    public let coordinator: ClusterCoordinator?

    public init(
        config: AppConfig,
        store: any ConnectorStore,
        secretBox: SecretBox,
        spool: Spool? = nil,
        pollSpool: Spool? = nil,
        migrator: DatabaseMigrator? = nil,
        instance: InstanceInfo? = nil,
        logger: Logger
    ) {
        deadLetters = DeadLetterQueue(store: store, retained: config.maxDeadLetters, logger: logger)
        metrics = PipelineMetrics()
        pollRows = PollRows(spool: pollSpool, store: store, metrics: metrics, migrator: migrator, logger: logger)
        broadcaster = Broadcaster(queueCapacity: config.realtimeQueueCapacity)
        buffer = IngestBuffer(
            capacity: config.ingestBufferCapacity,
            spool: spool,
            mode: config.spoolMode,
            memoryMessages: config.spoolMemoryMessages,
            announcesEarly: config.realtimeUnpersistedAfter != nil,
            announce: { [broadcaster] messages in broadcaster.publish(messages.map { StoredMessage(id: nil, pending: $0) }) }
        )
        writer = BatchWriter(
            buffer: buffer,
            store: store,
            broadcaster: broadcaster,
            metrics: metrics,
            maxBatch: config.batchMaxMessages,
            maxWait: config.batchMaxInterval,
            linger: config.batchLinger,
            maxRetryDelay: config.batchMaxInterval,
            slowWrite: config.spoolSlowWrite,
            unpersistedAfter: config.realtimeUnpersistedAfter,
            deadLetters: deadLetters,
            migrator: migrator,
            logger: logger
        )
        compactor = CandleCompactor(store: store, logger: logger)
        supervisor = ConnectorSupervisor(
            store: store,
            definition: { try ConnectorDefinition(record: $0, secretBox: secretBox) },
            buffer: buffer,
            pollRows: pollRows,
            deadLetters: deadLetters,
            metrics: metrics,
            settings: config.runtime,
            snapshot: ConnectorSnapshot(dataDirectory: config.dataDirectory),
            demoMode: config.demoConnectors != nil,
            logger: logger
        )
        service = ConnectorService(store: store, secretBox: secretBox, supervisor: supervisor, maxConnectors: config.maxConnectors, logger: logger)
        realtime = RealtimeEndpoint(
            broadcaster: broadcaster,
            pingInterval: config.realtimePingInterval,
            overflowGrace: config.realtimeOverflowGrace,
            maxClients: config.maxRealtimeClients,
            logger: logger
        )
        exporter = MetricsExporter(pipeline: metrics, buffer: buffer, broadcaster: broadcaster, store: store, deadLetters: deadLetters)
        if let instance, let clusterStore = store as? any ClusterStore & ConnectorStore {
            let coordinator = ClusterCoordinator(
                instance: instance,
                store: clusterStore,
                supervisor: supervisor,
                broadcaster: broadcaster,
                settings: config.cluster,
                logger: logger
            )
            supervisor.coordinate(with: coordinator)
            self.coordinator = coordinator
        } else {
            coordinator = nil
        }
    }
}

/// The router: error handling outermost, then open routes (`/health`, `/ready`) and token-protected `/api` routes.
public func buildRouter(
    config: AppConfig,
    store: any ConnectorStore,
    service: ConnectorService,
    metrics: MetricsExporter? = nil,
    migrator: DatabaseMigrator? = nil,
    instances: InstancesController? = nil,
    routes table: RouteTable<APIRequestContext> = RouteTable()
) -> Router<APIRequestContext> {
    let router = Router(context: APIRequestContext.self)
    // Outermost, so it sees the status the error middleware turned errors into.
    if let metrics { router.add(middleware: MetricsMiddleware(exporter: metrics)) }
    router.add(middleware: ErrorMiddleware())
    router.add(middleware: BrowserSafetyMiddleware(policy: BrowserPolicy(config: config)))
    router.add(middleware: TextInputMiddleware())
    let open = router.group()
    let api = router.group().add(middleware: AuthMiddleware(verifier: APITokenVerifier(tokens: config.apiTokens)))
    if let migrator { api.add(middleware: SchemaReadyMiddleware(migrator: migrator)) }
    HealthController(store: store, migrator: migrator).addRoutes(to: table, in: open)
    if let metrics { table.add(.get, "/metrics", in: open) { _, _ in metrics.response() } }
    let document = OpenAPIDocument.document.serialized
    table.add(.get, "/openapi.json", in: open) { _, _ in
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: document)))
    }
    ConsoleAssets.load(logger: Logger(label: "tributary")).addRoutes(to: open)
    ConnectorController(service: service).addRoutes(to: table, in: api)
    QueryController(store: store, service: service).addRoutes(to: table, in: api)
    (instances ?? InstancesController(config: config)).addRoutes(to: table, in: api)
    table.add(.get, "/api/realtime", in: api) { _, _ in
        throw APIError(
            .upgradeRequired,
            code: "UPGRADE_REQUIRED",
            detail: "/api/realtime is a WebSocket: connect with a WebSocket client",
            headers: [.upgrade: "websocket"]
        )
    }
    table.addMethodNotAllowedResponders()
    return router
}

/// The WebSocket upgrade router: `/api/realtime`, behind the same API tokens (header or `?token=`).
public func buildRealtimeRouter(config: AppConfig, endpoint: RealtimeEndpoint) -> Router<RealtimeRequestContext> {
    let router = Router(context: RealtimeRequestContext.self)
    router.add(middleware: ErrorMiddleware())
    router.add(middleware: BrowserSafetyMiddleware(policy: BrowserPolicy(config: config)))
    router.add(middleware: AuthMiddleware(verifier: APITokenVerifier(tokens: config.apiTokens)))
    router.ws("/api/realtime") { inbound, outbound, context in
        try await endpoint.handle(inbound, outbound, request: context.request, channel: context.requestContext.channel)
    }
    return router
}

/// The configured store, not yet migrated. It is a service: PostgreSQL's pool runs inside it.
/// With `instanceID`, a PostgreSQL store fences writes by lease and announces committed batches.
public func makeStore(_ config: AppConfig, instanceID: String? = nil, logger: Logger) async throws -> any ConnectorStore {
    switch config.database {
    case .sqlite(let path):
        return try await SQLiteStore.open(path: path, timeout: config.poolTimeout, logger: logger)
    case .postgres(let settings):
        return PostgresStore(
            settings: settings,
            poolMaximum: config.poolMaximum,
            timeout: config.poolTimeout,
            instanceID: instanceID,
            partitionByDay: config.messagePartitions == .daily,
            logger: logger
        )
    }
}

/// A durable spool in `directory` under the data directory (nil with `SPOOL_MODE=off`):
/// `spool` for the ingest buffer, `spool/polls` for REST poll rows. Recovers what an earlier run left.
public func makeSpool(_ config: AppConfig, logger: Logger, directory: String = "spool") throws -> Spool? {
    guard config.spoolMode != .off else { return nil }
    return try Spool(
        directory: (config.dataDirectory as NSString).appendingPathComponent(directory),
        maxBytes: config.spoolMaxBytes,
        fsync: config.spoolFsync,
        logger: logger
    )
}

/// The secret box for the configured key; in embedded mode the key lives in the data directory.
public func makeSecretBox(_ config: AppConfig) throws -> SecretBox {
    let keyText = try config.encryptionKey ?? EncryptionKey.loadOrCreate(inDirectory: config.dataDirectory)
    return SecretBox(
        current: try EncryptionKey(base64: keyText),
        previous: try config.previousEncryptionKeys.map { try EncryptionKey(base64: $0) }
    )
}

/// `tributary serve`: runs the server until SIGINT or SIGTERM, then shuts down gracefully.
public func runServer(_ config: AppConfig) async throws {
    config.bootstrapLogging()
    let logger = Logger(label: "tributary")
    logger.info("starting", metadata: config.logMetadata)
    let app = try await buildApplication(config, logger: logger)
    try await app.runService()
}

/// `tributary migrate`: applies pending migrations and returns once the schema is current;
/// with `rebuildCandles`, then refills the candle rollup from the stored trades; with
/// `resealSecrets`, re-encrypts stored secrets under the current key and returns how many
/// connectors it rewrote.
@discardableResult
public func runMigrations(_ config: AppConfig, rebuildCandles: Bool = false, resealSecrets: Bool = false) async throws -> Int {
    config.bootstrapLogging()
    let secretBox = resealSecrets ? try makeSecretBox(config) : nil
    let logger = Logger(label: "tributary")
    return try await withStore(config, logger: logger) { store in
        try await store.migrate()
        try await store.checkReady()
        if rebuildCandles { try await store.rebuildCandles() }
        guard let secretBox else { return 0 }
        return try await ConnectorService(store: store, secretBox: secretBox, logger: logger).resealSecrets()
    }
}

/// Runs `body` with the configured store, its service running (PostgreSQL's pool needs it), outside a server.
public func withStore<Value: Sendable>(
    _ config: AppConfig,
    logger: Logger,
    _ body: @escaping @Sendable (any ConnectorStore) async throws -> Value
) async throws -> Value {
    let store = try await makeStore(config, logger: logger)
    return try await withThrowingTaskGroup(of: Value?.self) { group in
        group.addTask {
            try await store.run()
            return nil
        }
        defer { group.cancelAll() }
        return try await body(store)
    }
}
