import Foundation
import Hummingbird

/// `GET /health` (the process is alive) and `GET /ready` (the database answers and is migrated).
public struct HealthController<Context: RequestContext>: Sendable {
    let store: any ConnectorStore

    public init(store: any ConnectorStore) { self.store = store }

    public func addRoutes(to table: RouteTable<Context>, in group: RouterGroup<Context>) {
        table.add(.get, "/health", in: group) { _, _ in
            JSONResponse.make(.ok, .object(["status": "ok", "timestamp": .string(Timestamp.format(Date()))]))
        }
        table.add(.get, "/ready", in: group) { _, _ in
            try await store.checkReady()
            return JSONResponse.make(.ok, .object(["status": "ready", "timestamp": .string(Timestamp.format(Date()))]))
        }
    }
}
