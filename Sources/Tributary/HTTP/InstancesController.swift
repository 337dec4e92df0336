import Foundation
import Hummingbird

/// `GET /api/instances`: the Tributary instances sharing this database, with their heartbeat,
/// version, address and the connectors each runs. With SQLite (a single instance) it is this one.
public struct InstancesController: Sendable {
    let coordinator: ClusterCoordinator?
    let supervisor: ConnectorSupervisor?
    let address: String
    let started = Date()

    public init(coordinator: ClusterCoordinator? = nil, supervisor: ConnectorSupervisor? = nil, config: AppConfig) {
        self.coordinator = coordinator
        self.supervisor = supervisor
        self.address = config.instanceAddress ?? "\(config.host):\(config.port)"
    }

    public func addRoutes<Context: RequestContext>(to table: RouteTable<Context>, in group: RouterGroup<Context>) {
        table.add(.get, "/api/instances", in: group) { _, _ in try await list() }
    }

    func list() async throws -> Response {
        let rows: [InstanceRow]
        let me: String
        if let coordinator {
            me = coordinator.instance.instanceID
            rows = try await coordinator.instances()
        } else {
            me = "local"
            let running = await supervisor?.runningIDs.sorted() ?? []
            var rate = 0.0
            for id in running { rate += await supervisor?.state(of: id)?.counters.sampleRate() ?? 0 }
            rows = [
                InstanceRow(
                    instanceID: me,
                    address: address,
                    version: tributaryVersion,
                    startedAt: started,
                    heartbeatAt: Date(),
                    stopped: false,
                    alive: true,
                    connectors: running,
                    messagesPerSecond: rate
                )
            ]
        }
        let data: [JSONValue] = rows.map { row in
            guard var object = row.json.objectValue else { return row.json }
            object["self"] = .bool(row.instanceID == me)
            return .object(object)
        }
        return JSONResponse.success("\(rows.count) instances", data: .array(data))
    }
}
