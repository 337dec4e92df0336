import Foundation
import PostgresNIO

extension PostgresStore: QueryableStore {
    package var dialect: SQLDialect { .postgres }

    package func fetch(_ what: String, _ sql: String, _ arguments: [QueryArgument]) async throws -> [any StoredRow] {
        var bindings = PostgresBindings(capacity: arguments.count)
        for argument in arguments {
            switch argument {
            case .text(let value): bindings.append(value)
            case .integer(let value): bindings.append(value)
            case .date(let value): bindings.append(value)
            case .null: bindings.appendNull()
            }
        }
        let query = PostgresQuery(unsafeSQL: sql, binds: bindings)
        return try await run(what) { [logger] client in
            var rows: [any StoredRow] = []
            for try await row in try await client.query(query, logger: logger) { rows.append(PostgresStoredRow(row: row)) }
            return rows
        }
    }
}
