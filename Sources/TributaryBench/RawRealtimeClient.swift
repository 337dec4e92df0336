import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Tributary

/// A realtime client for `bench fanout` that costs as little as a client can: a channel handler
/// on NIO's event loops that does the WebSocket handshake by hand and reads the server's frames
/// straight out of the socket's bytes (no tasks, no async sequence, no `String` per frame), taking
/// two fields of each `data_update` by scanning. Hundreds of them share the machine with the server
/// under test, so what they cost is taken from the server.
final class RawRealtimeClient: Sendable {
    struct Received {
        var ids: [Int64] = []
        var latenciesMs: [Double] = []
        /// When each of `latenciesMs` was sent (ms since 1970), in the same order.
        var sentMs: [Double] = []
        var connected = false
        var closed = false
    }
    let received = Mutex(Received())
    private let channel = Mutex<(any Channel)?>(nil)

    /// Connects to `/api/realtime` on `port`, filtered to `instrument` when given.
    func connect(port: Int, instrument: String?) async throws {
        let query = instrument.map { "?instrument=\($0)" } ?? ""
        let handler = Handler(client: self, path: "/api/realtime\(query)", port: port)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) } }
            .connect(host: "127.0.0.1", port: port)
            .get()
        self.channel.withLock { $0 = channel }
    }

    func stop() { channel.withLock { $0?.close(promise: nil) } }

    /// Waits for the server's `connected` message (30 s at most).
    func waitConnected() async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while !received.withLock({ $0.connected }) {
            guard ContinuousClock.now < deadline else { throw BenchmarkError("a realtime client did not connect") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The handshake, then frames: a server's frames are unmasked, so a frame is a 2-byte header,
    /// an optional 2- or 8-byte length and the payload.
    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let client: RawRealtimeClient
        let path: String
        let port: Int
        var pending: ByteBuffer?
        var upgraded = false
        /// Larger frames than this close the connection (the server's updates are a few hundred bytes).
        static let maxFrame = 1 << 20

        init(client: RawRealtimeClient, path: String, port: Int) {
            self.client = client
            self.path = path
            self.port = port
        }

        func channelActive(context: ChannelHandlerContext) {
            let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            let request =
                "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: request)), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            client.received.withLock { $0.closed = true }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            var buffer = bytes
            if var earlier = pending {
                earlier.writeBuffer(&bytes)
                buffer = earlier
            }
            defer {
                // Only a partial frame is kept, copied out of the (large) read buffer.
                if buffer.readableBytes > 0 {
                    var rest = context.channel.allocator.buffer(capacity: buffer.readableBytes)
                    rest.writeBuffer(&buffer)
                    pending = rest
                } else {
                    pending = nil
                }
            }
            if !upgraded {
                let view = buffer.readableBytesView
                guard let end = view.firstRange(of: Array("\r\n\r\n".utf8)) else {
                    // A response head has no business being this long: give up rather than buffer it.
                    if view.count > 16_384 {
                        buffer.clear()
                        context.close(promise: nil)
                    }
                    return
                }
                let head = String(decoding: view[view.startIndex..<end.lowerBound], as: UTF8.self)
                guard head.hasPrefix("HTTP/1.1 101") else {
                    context.close(promise: nil)
                    return
                }
                buffer.moveReaderIndex(to: end.upperBound)
                upgraded = true
            }
            var ids: [Int64] = []
            var sent: [Double] = []
            var connected = false
            reading: while true {
                let opcode: UInt8
                let payload: ByteBuffer
                switch Self.frame(&buffer) {
                case .incomplete: break reading
                case .tooLarge:
                    buffer.clear()
                    context.close(promise: nil)
                    break reading
                case .frame(let code, let bytes): (opcode, payload) = (code, bytes)
                }
                if opcode == 0x8 {
                    context.close(promise: nil)
                    break
                }
                guard opcode == 0x1 else { continue }
                payload.withUnsafeReadableBytes { bytes in
                    if Self.after(Self.dataUpdate, in: bytes, at: 0) {
                        if let id = Self.number(after: Self.idKey, in: bytes) { ids.append(id) }
                        if let time = Self.time(after: Self.exchangeTimeKey, in: bytes) { sent.append(time) }
                    } else if Self.after(Self.connectedPrefix, in: bytes, at: 0) {
                        connected = true
                    }
                }
            }
            guard !ids.isEmpty || !sent.isEmpty || connected else { return }
            let nowMs = Date().timeIntervalSince1970 * 1000
            client.received.withLock { received in
                received.connected = received.connected || connected
                received.ids += ids
                for time in sent { received.latenciesMs.append(nowMs - time) }
                received.sentMs += sent
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

        enum Frame {
            case incomplete
            case tooLarge
            case frame(opcode: UInt8, payload: ByteBuffer)
        }

        /// The next whole frame, consumed from `buffer` (nothing is consumed unless it is whole).
        static func frame(_ buffer: inout ByteBuffer) -> Frame {
            let start = buffer.readerIndex
            guard let first = buffer.readInteger(as: UInt8.self), let second = buffer.readInteger(as: UInt8.self) else {
                buffer.moveReaderIndex(to: start)
                return .incomplete
            }
            var length = UInt64(second & 0x7F)
            if length == 126 {
                guard let extended = buffer.readInteger(as: UInt16.self) else {
                    buffer.moveReaderIndex(to: start)
                    return .incomplete
                }
                length = UInt64(extended)
            } else if length == 127 {
                guard let extended = buffer.readInteger(as: UInt64.self) else {
                    buffer.moveReaderIndex(to: start)
                    return .incomplete
                }
                length = extended
            }
            guard length <= UInt64(maxFrame) else { return .tooLarge }
            guard let payload = buffer.readSlice(length: Int(length)) else {
                buffer.moveReaderIndex(to: start)
                return .incomplete
            }
            return .frame(opcode: first & 0x0F, payload: payload)
        }

        static let dataUpdate = Array(#"{"type":"data_update""#.utf8)
        static let connectedPrefix = Array(#"{"type":"connected""#.utf8)
        static let idKey = Array(#""id":"#.utf8)
        static let exchangeTimeKey = Array(#""exchange_timestamp":""#.utf8)

        /// Whether `key` is at `offset` of `bytes`.
        static func after(_ key: [UInt8], in bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool {
            guard offset >= 0, bytes.count - offset >= key.count else { return false }
            for (index, byte) in key.enumerated() where bytes[offset + index] != byte { return false }
            return true
        }

        /// The offset just past the first `key` in `bytes`.
        static func end(of key: [UInt8], in bytes: UnsafeRawBufferPointer) -> Int? {
            guard let first = key.first, bytes.count >= key.count else { return nil }
            var offset = 0
            while offset <= bytes.count - key.count {
                if bytes[offset] == first, after(key, in: bytes, at: offset) { return offset + key.count }
                offset += 1
            }
            return nil
        }

        /// The decimal digits right after `key`.
        static func number(after key: [UInt8], in bytes: UnsafeRawBufferPointer) -> Int64? {
            guard var offset = end(of: key, in: bytes) else { return nil }
            var value: Int64 = 0
            var digits = 0
            while offset < bytes.count, bytes[offset] >= UInt8(ascii: "0"), bytes[offset] <= UInt8(ascii: "9"), digits < 18 {
                value = value * 10 + Int64(bytes[offset] - UInt8(ascii: "0"))
                digits += 1
                offset += 1
            }
            return digits > 0 ? value : nil
        }

        /// Milliseconds since 1970 of the RFC 3339 time in quotes after `key`.
        static func time(after key: [UInt8], in bytes: UnsafeRawBufferPointer) -> Double? {
            guard let start = end(of: key, in: bytes) else { return nil }
            var end = start
            while end < bytes.count, bytes[end] != UInt8(ascii: "\"") { end += 1 }
            guard end < bytes.count else { return nil }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
            return Timestamp.parse(text).map { $0.timeIntervalSince1970 * 1000 }
        }
    }
}
