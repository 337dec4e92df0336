import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import Tributary

/// Realtime updates are framed by the server itself and written past NIO's WebSocket frame
/// encoder, so their bytes must be exactly what that encoder writes, at every length class.
@Suite struct RealtimeFrameTests {
    /// Lengths in bytes around each of the three length encodings (7-bit, 16-bit, 64-bit).
    static let lengths = [0, 1, 125, 126, 127, 400, 65_535, 65_536, 70_001]

    static func text(bytes: Int) -> String {
        // Two-byte characters where they fit, so byte length and character count differ.
        String(repeating: "é", count: bytes / 2) + String(repeating: "x", count: bytes % 2)
    }

    static func encodedByNIO(_ text: String) throws -> ByteBuffer {
        let channel = EmbeddedChannel(handler: WebSocketFrameEncoder())
        let frame = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text))
        try channel.writeOutbound(frame)
        var bytes = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&part) }
        _ = try channel.finish()
        return bytes
    }

    @Test(arguments: lengths)
    func aFrameIsWhatNIOsEncoderWrites(length: Int) throws {
        let text = Self.text(bytes: length)
        #expect(text.utf8.count == length)
        let frame = RealtimeFrame(text: text)
        #expect(frame.bytes == (try Self.encodedByNIO(text)))
        #expect(frame.text == text)
    }

    @Test func framesAreJoinedBackToBack() throws {
        let texts = ["a", Self.text(bytes: 300), Self.text(bytes: 70_000)]
        let frames = texts.map(RealtimeFrame.init(text:))
        var expected = ByteBuffer()
        for text in texts { expected.writeImmutableBuffer(try Self.encodedByNIO(text)) }
        #expect(RealtimeFrame.joined(frames, allocator: ByteBufferAllocator()) == expected)
        #expect(RealtimeFrame.joined([frames[1]], allocator: ByteBufferAllocator()) == frames[1].bytes)
    }
}
