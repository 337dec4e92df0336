import Logging
import ServiceLifecycle

/// `serve --demo`: once the schema is current, creates (marked demo) or updates the demo's
/// connectors and starts them; when the server stops, stops them again and says so. It is the
/// last service, so it stops first, while the fake exchange and the pipeline still run. A plain
/// `serve` never starts a demo connector (`ConnectorSupervisor.demoMode`).
struct DemoConnectors: Service {
    let bodies: [JSONValue]
    let service: ConnectorService
    let migrator: DatabaseMigrator
    let logger: Logger

    func run() async throws {
        guard await migrator.waitUntilDone() else { return }
        var started: [(id: String, name: String)] = []
        for body in bodies {
            do {
                let view = try await service.startDemo(body)
                started.append((view.connectorID, view.record.config.name))
            } catch {
                logger.error(
                    "could not set up a demo connector",
                    metadata: ["name": "\(body["name"]?.stringValue ?? "")", "error_type": "\(type(of: error))", "error": "\(error)"]
                )
            }
        }
        try? await gracefulShutdown()
        for connector in started {
            do {
                _ = try await service.perform(.stop, on: connector.id)
            } catch {
                // The next plain `serve` records it as stopped instead.
                logger.warning("could not stop a demo connector", metadata: ["connector_id": "\(connector.id)", "error": "\(error)"])
            }
        }
        logger.notice(
            "demo ended: its connectors are left stopped with their data; `tributary serve --demo` starts them again, a plain `serve` does not",
            metadata: ["connectors": "\(started.map(\.name).joined(separator: ","))"]
        )
    }
}
