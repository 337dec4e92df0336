import Dispatch
import Foundation

/// One HTTP exchange over a plain blocking socket, for what a friendly client never does:
/// a forged `Host`, a body written in full before reading, a request head that never ends.
/// Runs on a dispatch thread, never on the cooperative pool the server under test needs.
enum RawHTTP {
    /// Sends `head` (and then `body`, all of it, before reading), and returns everything read
    /// until the server closes or `timeout` passes without data.
    static func exchange(port: Int, head: String, body: [UInt8] = [], timeout: Duration = .seconds(5)) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try blocking(port: port, head: head, body: body, timeout: timeout) })
            }
        }
    }

    /// A blocking socket connected to 127.0.0.1:`port`; with `timeout`, sends and receives give
    /// up after it; with `receiveBuffer`, the kernel's receive buffer is that small.
    static func connectSocket(port: Int, timeout: Duration?, receiveBuffer: Int32? = nil) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if let timeout {
            var wait = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        }
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw TestSetupError("could not connect to 127.0.0.1:\(port)")
        }
        return fd
    }

    static func blocking(port: Int, head: String, body: [UInt8], timeout: Duration) throws -> String {
        let fd = try connectSocket(port: port, timeout: timeout)
        defer { close(fd) }
        var bytes = Array(head.utf8) + body
        var sent = 0
        while sent < bytes.count {
            let written = bytes.withUnsafeBytes { raw in send(fd, raw.baseAddress.map { $0 + sent }, raw.count - sent, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { break }
            sent += written
        }
        bytes = []
        return readAll(fd)
    }

    /// Reads until the peer closes or the receive timeout passes.
    static func readAll(_ fd: Int32) -> String {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { break }
            received += buffer[0..<count]
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// Opens a connection that sends `partial` and then nothing; returns the socket, for the
    /// caller to read from (`readAll`) and close.
    static func openIdle(port: Int, partial: String, timeout: Duration) async throws -> Int32 {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(
                    with: Result {
                        let fd = try connectSocket(port: port, timeout: timeout)
                        _ = partial.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                        return fd
                    }
                )
            }
        }
    }

    /// Sends `bytes` on an open socket (on a dispatch thread); false if the peer is gone.
    static func write(_ fd: Int32, _ bytes: [UInt8]) async -> Bool {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var sent = 0
                while sent < bytes.count {
                    let written = bytes.withUnsafeBytes { raw in
                        Glibc.send(fd, raw.baseAddress.map { $0 + sent }, raw.count - sent, Int32(MSG_NOSIGNAL))
                    }
                    guard written > 0 else { break }
                    sent += written
                }
                continuation.resume(returning: sent == bytes.count)
            }
        }
    }

    static func read(_ fd: Int32) async -> String {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: readAll(fd)) }
        }
    }
}
