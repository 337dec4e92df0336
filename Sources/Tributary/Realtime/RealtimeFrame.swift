import NIOCore

/// One realtime update as the bytes of a complete, unmasked WebSocket text frame (header and
/// payload), encoded once per message and shared by every client that gets it: a `ByteBuffer` is
/// copy-on-write, so a hundred clients hold one copy, and a client's backlog goes out as one write
/// instead of a pipeline trip and two buffers per frame (see `ChannelSender`).
struct RealtimeFrame: Sendable {
    let bytes: ByteBuffer
    /// Where the payload starts in `bytes`.
    private let headerLength: Int

    init(text: String) { self.init(utf8: Array(text.utf8)) }

    /// The frame of the text whose UTF-8 is `text`.
    init(utf8 text: [UInt8]) {
        let length = text.count
        var bytes = ByteBuffer()
        bytes.reserveCapacity(length + 10)
        bytes.writeInteger(UInt8(0x81))  // FIN, text
        switch length {
        case 0...125:
            bytes.writeInteger(UInt8(length))
        case 126...0xFFFF:
            bytes.writeInteger(UInt8(126))
            bytes.writeInteger(UInt16(length))
        default:
            bytes.writeInteger(UInt8(127))
            bytes.writeInteger(UInt64(length))
        }
        headerLength = bytes.readableBytes
        bytes.writeBytes(text)
        self.bytes = bytes
    }

    /// The update's text.
    var text: String {
        bytes.getString(at: bytes.readerIndex + headerLength, length: bytes.readableBytes - headerLength) ?? ""
    }

    /// `frames` as one buffer: the frame itself when there is one, else their bytes back to back.
    static func joined(_ frames: [RealtimeFrame], allocator: ByteBufferAllocator) -> ByteBuffer {
        if frames.count == 1 { return frames[0].bytes }
        var joined = allocator.buffer(capacity: frames.reduce(0) { $0 + $1.bytes.readableBytes })
        for frame in frames { joined.writeImmutableBuffer(frame.bytes) }
        return joined
    }
}
