import Foundation
import SQLiteNIO

extension SQLiteStore: QueryableStore {
    package var dialect: SQLDialect { .sqlite }
    /// One writer: batches merge their minutes into candles_1m directly.
    package var candleTables: [String] { ["candles_1m"] }

    package func fetch(_ what: String, _ sql: String, _ arguments: [QueryArgument]) async throws -> [any StoredRow] {
        let binds: [SQLiteData] = arguments.map { argument in
            switch argument {
            case .text(let value): .text(value)
            case .integer(let value): .integer(Int(value))
            case .date(let value): .text(Timestamp.format(value))
            case .null: .null
            }
        }
        return try await exclusive(what) { connection in
            try await connection.query(sql, binds).map { SQLiteStoredRow(row: $0) }
        }
    }
}
