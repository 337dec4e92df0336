import Foundation
import Hummingbird

/// `GET /health` (the process is alive) and `GET /ready` (the database answers and is migrated,
/// and the server's own migrator is done: until then the API answers 503 too).
public struct HealthController<Context: RequestContext>: Sendable {
    let store: any SchemaMigrations
    let migrator: DatabaseMigrator?

    public init(store: any SchemaMigrations, migrator: DatabaseMigrator? = nil) {
        self.store = store
        self.migrator = migrator
    }

    public func addRoutes(to table: RouteTable<Context>, in group: RouterGroup<Context>) {
        table.add(.get, "/health", in: group) { _, _ in
            JSONResponse.make(.ok, .object(["status": "ok", "timestamp": .string(Timestamp.format(Date()))]))
        }
        table.add(.get, "/ready", in: group) { _, _ in
            if let migrator, !migrator.isDone { throw StoreError.unavailable("the schema is not migrated yet (waiting for the database)") }
            try await store.checkReady()
            return JSONResponse.make(.ok, .object(["status": "ready", "timestamp": .string(Timestamp.format(Date()))]))
        }
    }
}
