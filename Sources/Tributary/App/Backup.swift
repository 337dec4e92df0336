import Foundation
import Logging

/// `tributary backup --to DIR`: an online copy of the embedded SQLite database (`VACUUM INTO`,
/// a consistent snapshot taken while the server keeps writing; SQLite documents it as the
/// alternative to the backup API that also compacts) and of the generated encryption key,
/// without which the copied connector secrets cannot be read. PostgreSQL is backed up with
/// `pg_dump`; this refuses it. Messages still in the spool are not in the copy.
public func runBackup(_ config: AppConfig, to directory: String) async throws -> [String] {
    guard case .sqlite(let path) = config.database else {
        throw ConfigError(
            "backup copies the embedded SQLite database; with PostgreSQL use pg_dump, and keep ENCRYPTION_KEY (see the README's Operations section)"
        )
    }
    guard FileManager.default.fileExists(atPath: path) else { throw ConfigError("no database at \(path): nothing to back up") }
    let target = (directory as NSString).appendingPathComponent("tributary.sqlite")
    guard !FileManager.default.fileExists(atPath: target) else { throw ConfigError("\(target) exists already; back up into a new directory") }
    do {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    } catch {
        throw ConfigError("cannot create \(directory): \(error.localizedDescription)")
    }
    var written: [String] = []
    try await withStore(config, logger: Logger(label: "tributary")) { store in
        guard let sqlite = store as? SQLiteStore else { throw ConfigError("backup needs the SQLite store") }
        try await sqlite.backup(to: target)
    }
    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: target)
    written.append(target)
    if config.encryptionKey == nil {
        let key = (config.dataDirectory as NSString).appendingPathComponent("encryption.key")
        if let data = FileManager.default.contents(atPath: key) {
            let copy = (directory as NSString).appendingPathComponent("encryption.key")
            guard FileManager.default.createFile(atPath: copy, contents: data, attributes: [.posixPermissions: 0o600]) else {
                throw ConfigError("cannot write \(copy)")
            }
            written.append(copy)
        }
    }
    return written
}
