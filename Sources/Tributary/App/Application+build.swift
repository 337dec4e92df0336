import Hummingbird
import Logging
import ServiceLifecycle

/// The composition root: builds storage, secrets, services and the router from one config.
public func buildApplication(_ config: AppConfig, logger: Logger) async throws -> some ApplicationProtocol {
    let secretBox = try makeSecretBox(config)
    let store = try await makeStore(config, logger: logger)
    let router = buildRouter(config: config, store: store, service: ConnectorService(store: store, secretBox: secretBox, logger: logger))
    var app = Application(
        router: router,
        configuration: .init(address: .hostname(config.host, port: config.port), serverName: "tributary"),
        services: [store],
        onServerRunning: { channel in
            logger.notice("Tributary is listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        },
        logger: logger
    )
    app.beforeServerStarts {
        try await store.migrate()
        logger.info("database ready", metadata: ["database": "\(config.description)"])
    }
    return app
}

/// The router: error handling outermost, then open routes (`/health`, `/ready`) and token-protected `/api` routes.
public func buildRouter(config: AppConfig, store: any ConnectorStore, service: ConnectorService) -> Router<BasicRequestContext> {
    let router = Router()
    router.add(middleware: ErrorMiddleware())
    let table = RouteTable<BasicRequestContext>()
    let open = router.group()
    let api = router.group().add(middleware: AuthMiddleware(verifier: APITokenVerifier(tokens: config.apiTokens)))
    HealthController(store: store).addRoutes(to: table, in: open)
    ConnectorController(service: service).addRoutes(to: table, in: api)
    table.addMethodNotAllowedResponders()
    return router
}

/// The configured store, not yet migrated. It is a service: PostgreSQL's pool runs inside it.
public func makeStore(_ config: AppConfig, logger: Logger) async throws -> any ConnectorStore {
    switch config.database {
    case .sqlite(let path):
        return try await SQLiteStore.open(path: path, timeout: config.poolTimeout, logger: logger)
    case .postgres(let settings):
        return PostgresStore(
            settings: settings,
            poolMinimum: config.poolMinimum,
            poolMaximum: config.poolMaximum,
            timeout: config.poolTimeout,
            logger: logger
        )
    }
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
    logger.info("starting", metadata: ["config": "\(config)"])
    let app = try await buildApplication(config, logger: logger)
    try await app.runService()
}

/// `tributary migrate`: applies pending migrations and returns once the schema is current.
public func runMigrations(_ config: AppConfig) async throws {
    config.bootstrapLogging()
    let store = try await makeStore(config, logger: Logger(label: "tributary"))
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await store.run() }
        try await store.migrate()
        try await store.checkReady()
        group.cancelAll()
    }
}
