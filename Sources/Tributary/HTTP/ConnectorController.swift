import Hummingbird

/// `/api/connectors`: create, list, read, update, delete, lifecycle actions and status.
public struct ConnectorController<Context: RequestContext>: Sendable {
    let service: ConnectorService

    public init(service: ConnectorService) { self.service = service }

    public func addRoutes(to table: RouteTable<Context>, in group: RouterGroup<Context>) {
        table.add(.get, "/api/connectors", in: group, use: list)
        table.add(.post, "/api/connectors", in: group, use: create)
        table.add(.get, "/api/connectors/{connector_id}", in: group, use: get)
        table.add(.put, "/api/connectors/{connector_id}", in: group, use: update)
        table.add(.delete, "/api/connectors/{connector_id}", in: group, use: delete)
        for action in LifecycleAction.allCases {
            table.add(.post, "/api/connectors/{connector_id}/\(action.rawValue)", in: group) { request, context in
                try await perform(action, request: request, context: context)
            }
        }
        table.add(.get, "/api/connectors/{connector_id}/status", in: group, use: status)
        table.add(.post, "/api/connectors/{connector_id}/test", in: group, use: test)
    }

    @Sendable func list(_ request: Request, context: Context) async throws -> Response {
        let limit = try request.integerParameter("limit", default: 100, range: 1...1000)
        let offset = try request.integerParameter("offset", default: 0, range: 0...Int(Int32.max))
        let page = try await service.list(limit: limit, offset: offset)
        return JSONResponse.success(
            "\(page.connectors.count) of \(page.total) connectors",
            data: .array(page.connectors.map(\.json)),
            extra: ["total": .number(page.total), "limit": .number(limit), "offset": .number(offset)]
        )
    }

    @Sendable func create(_ request: Request, context: Context) async throws -> Response {
        var request = request
        let connector = try await service.create(try await request.jsonBody(context: context))
        return JSONResponse.success(
            "Connector created",
            data: connector.json,
            extra: ["connector_id": .string(connector.connectorID)]
        )
    }

    @Sendable func get(_ request: Request, context: Context) async throws -> Response {
        let connector = try await service.get(try context.parameters.require("connector_id"))
        return JSONResponse.success("Connector \(connector.connectorID)", data: connector.json)
    }

    @Sendable func update(_ request: Request, context: Context) async throws -> Response {
        var request = request
        let id = try context.parameters.require("connector_id")
        let connector = try await service.update(id, body: try await request.jsonBody(context: context))
        return JSONResponse.success("Connector updated", data: connector.json)
    }

    @Sendable func delete(_ request: Request, context: Context) async throws -> Response {
        let id = try context.parameters.require("connector_id")
        try await service.delete(id)
        return JSONResponse.success("Connector deleted", data: .object(["connector_id": .string(id)]))
    }

    func perform(_ action: LifecycleAction, request: Request, context: Context) async throws -> Response {
        let connector = try await service.perform(action, on: try context.parameters.require("connector_id"))
        let verb = ["start": "started", "stop": "stopped", "restart": "restarted"][action.rawValue] ?? action.rawValue
        return JSONResponse.success("Connector \(verb)", data: connector.json)
    }

    @Sendable func test(_ request: Request, context: Context) async throws -> Response {
        let result = try await service.test(try context.parameters.require("connector_id"))
        let ok = result["ok"]?.boolValue == true
        return JSONResponse.success(ok ? "Test request succeeded" : "Test request failed: see data.error", data: result)
    }

    @Sendable func status(_ request: Request, context: Context) async throws -> Response {
        let connector = try await service.get(try context.parameters.require("connector_id"))
        return JSONResponse.success("Connector status", data: connector.statusJSON)
    }
}
