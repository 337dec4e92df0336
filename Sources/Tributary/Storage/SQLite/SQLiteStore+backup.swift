import SQLiteNIO

extension SQLiteStore {
    /// Writes a consistent copy of the database to `path` (which must not exist) with `VACUUM
    /// INTO`: a read transaction, so it runs while the server writes (WAL mode).
    func backup(to path: String) async throws {
        try await exclusive("backup", timeout: Migrations.timeout) { connection in
            _ = try await connection.query("VACUUM INTO ?", [.text(path)])
        }
    }
}
