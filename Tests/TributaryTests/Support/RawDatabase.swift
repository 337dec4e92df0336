import Foundation
import Logging
import PostgresNIO
import SQLiteNIO

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// Direct SQL against a test database, bypassing Tributary, to check what is really stored.
enum RawDatabase {
    /// Runs `sql` and returns the first column of each row as text.
    static func strings(_ config: AppConfig, _ sql: String) async throws -> [String?] {
        switch config.database {
        case .sqlite(let path):
            let connection: SQLiteConnection = try await SQLiteConnection.open(storage: .file(path: path))
            _ = try await connection.query("PRAGMA foreign_keys = ON")
            let rows = try await connection.query(sql)
            try await connection.close()
            return rows.map { row in row.columns.first.flatMap { $0.data.isNull ? nil : $0.data.string } }
        case .postgres(let settings):
            return try await TestBackend.admin(settings) { client in
                var values: [String?] = []
                for try await row in try await client.query(PostgresQuery(unsafeSQL: sql)) {
                    values.append(try row.makeRandomAccess()[0].decode(String?.self))
                }
                return values
            }
        }
    }

    /// Every byte the database keeps on disk (SQLite: the file and its WAL), as text, for searching plaintext.
    static func sqliteFileText(_ config: AppConfig) throws -> String {
        guard case .sqlite(let path) = config.database else { return "" }
        return [path, path + "-wal"].compactMap { FileManager.default.contents(atPath: $0) }
            .map { String(decoding: $0, as: UTF8.self) }.joined()
    }
}
