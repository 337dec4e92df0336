import Dispatch
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A WebSocket client that completes the handshake and then never reads: a stalled consumer.
/// It uses a raw socket with a tiny receive buffer so the server's writes back up quickly.
final class StalledWebSocket: Sendable {
    let descriptor: Int32

    /// Connects and upgrades on a dispatch thread: blocking socket calls must not hold one of the
    /// few cooperative threads that the server under test needs to answer.
    init(port: Int, path: String) async throws {
        descriptor = try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try Self.handshake(port: port, path: path) })
            }
        }
    }

    static func handshake(port: Int, path: String) throws -> Int32 {
        let fd = try RawHTTP.connectSocket(port: port, timeout: nil, receiveBuffer: 4096)
        let request =
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let read = recv(fd, &buffer, 512, 0)
        guard read > 0, String(decoding: buffer[0..<read], as: UTF8.self).hasPrefix("HTTP/1.1 101") else {
            throw TestSetupError("stalled client was not upgraded")
        }
        return fd
    }

    /// True once the server has closed its end of this connection (Linux: its socket in
    /// `/proc/net/tcp` is no longer ESTABLISHED, or gone). Asked on the server's side because a
    /// FIN reaches this client only after everything queued before it, through this socket's tiny
    /// window (the kernel paces that with zero-window probes: it took over 30 s in CI).
    func serverClosed(serverPort: Int) throws -> Bool {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else { throw TestSetupError("getsockname failed") }
        let clientPort = Int(UInt16(bigEndian: address.sin_port))
        let server = String(format: "0100007F:%04X", serverPort)
        let client = String(format: "0100007F:%04X", clientPort)
        let table = try Self.readAll("/proc/net/tcp")
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, fields[1] == server, fields[2] == client else { continue }
            return fields[3] != "01"  // 01: ESTABLISHED
        }
        return true
    }

    /// The whole of a /proc file, read to its end (they report a size of 0, and a read sized by
    /// that gets only the first page of a long socket table).
    static func readAll(_ path: String) throws -> String {
        let file = open(path, O_RDONLY)
        guard file >= 0 else { throw TestSetupError("cannot open \(path)") }
        defer { Glibc.close(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(file, &chunk, chunk.count)
            guard count >= 0 else { throw TestSetupError("cannot read \(path)") }
            if count == 0 { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }

    func close() {
        Glibc.close(descriptor)
    }
}
