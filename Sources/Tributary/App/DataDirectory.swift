import Foundation
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One server per data directory: an exclusive `flock` on `<data>/lock`, held while the server
/// runs (the spool, SQLite and the connector snapshot live there; two processes on them would
/// corrupt each other). A second `serve` on the same directory stops at start and says why.
public final class DataDirectoryLock: Sendable {
    /// The locked file, or -1 once released.
    let descriptor: Mutex<Int32>
    public let path: String

    init(descriptor: Int32, path: String) {
        self.descriptor = Mutex(descriptor)
        self.path = path
    }

    /// Lets the directory go (closing the file drops the lock); idempotent.
    public func release() {
        descriptor.withLock { descriptor in
            if descriptor >= 0 { close(descriptor) }
            descriptor = -1
        }
    }

    public static func acquire(_ directory: String) throws(ConfigError) -> DataDirectoryLock {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw ConfigError("cannot create the data directory \(directory): \(error.localizedDescription)")
        }
        let path = (directory as NSString).appendingPathComponent("lock")
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw ConfigError("cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = pread(descriptor, &buffer, 31, 0)
            let holder = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            close(descriptor)
            throw ConfigError(
                "another Tributary process\(holder.isEmpty ? "" : " (pid \(holder))") is using the data directory \(directory): one server per data directory. With SQLite Tributary runs as a single instance; to run several, use PostgreSQL and give each its own TRIBUTARY_DATA_DIR"
            )
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(descriptor, 0)
        _ = pid.withCString { pwrite(descriptor, $0, strlen($0), 0) }
        return DataDirectoryLock(descriptor: descriptor, path: path)
    }

    deinit { release() }
}

/// This instance's id among several on one PostgreSQL: created once in `<data>/instance-id`, so
/// a restarted server takes back its own leases at once instead of waiting for them to expire
/// (the data directory lock guarantees no other live process has the same id).
public enum InstanceIdentity {
    public static func load(dataDirectory: String) throws(ConfigError) -> String {
        let path = (dataDirectory as NSString).appendingPathComponent("instance-id")
        if let data = FileManager.default.contents(atPath: path) {
            let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if text.hasPrefix("inst_"), text.count <= 64, text.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) { return text }
        }
        let id = "inst_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        guard FileManager.default.createFile(atPath: path, contents: Data((id + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ConfigError("cannot write \(path)")
        }
        return id
    }
}

/// The version this binary reports (`/api/instances`, `/openapi.json`).
public let tributaryVersion = "1.0.0"

/// Holds the data directory lock while the server runs and lets it go when it stops.
struct DataDirectoryLockService: Service {
    let lock: DataDirectoryLock

    func run() async throws {
        try? await gracefulShutdown()
        lock.release()
    }
}
