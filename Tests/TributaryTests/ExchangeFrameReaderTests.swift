import NIOCore
import NIOEmbedded
import NIOWebSocket
import Synchronization
import Testing

@testable import Tributary

/// How `ExchangeFrameReader` paces its reads for the batch writer, on an embedded channel whose
/// event loop runs only when told to (the same reader against a real exchange socket:
/// `StreamingTests.readsWaitForTheWritersNextTake`).
@Suite struct ExchangeFrameReaderTests {
    /// A sink whose writer's promised start (`readsMayWaitUntil`) the test sets.
    final class PromisingSink: FrameSink {
        let until = Atomic<UInt64>(0)
        let taken = Atomic<Int>(0)
        let completed = Atomic<Int>(0)
        func take(_ frame: ByteBufferView) -> Bool {
            taken.add(1, ordering: .relaxed)
            return true
        }
        func readComplete() { completed.add(1, ordering: .relaxed) }
        func handingOff() {}
        var messagesHandedOff: Int { 0 }
        var readsMayWaitUntil: UInt64 { until.load(ordering: .relaxed) }
        func paused() {}
        func hasRoom() -> Bool { true }
        func resumed(pausedSince: ContinuousClock.Instant) {}
    }

    /// Counts the reads that get past the reader to the socket.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = NIOAny
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    static func frame() -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: #"{"arg":{}}"#))
    }

    static func promise(_ sink: PromisingSink, in amount: TimeAmount) {
        sink.until.store(NIODeadline.now().uptimeNanoseconds + UInt64(amount.nanoseconds), ordering: .relaxed)
    }

    /// After frames went to the sink, the next read is decided once the event loop's other work
    /// has run (there the writer takes what was read and promises its next start): then it is
    /// held until that start, and the frames of the meantime are read together.
    @Test func aReadAfterFramesWaitsForTheWritersTurnThenHolds() throws {
        let sink = PromisingSink()
        let counter = ReadCounter()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([counter, ExchangeFrameReader(sink: sink)])

        // No frames yet, no promise: read at once.
        channel.pipeline.read()
        #expect(counter.reads == 1)

        try channel.writeInbound(Self.frame())
        #expect(sink.taken.load(ordering: .relaxed) == 1)
        #expect(sink.completed.load(ordering: .relaxed) == 1, "the read's end is passed on")
        channel.pipeline.read()
        #expect(counter.reads == 1, "decided after the loop's other work, not at once")
        // The writer's turn: it takes the frame and will not start again for 50 ms.
        Self.promise(sink, in: .milliseconds(50))
        channel.embeddedEventLoop.run()
        #expect(counter.reads == 1, "held for the writer's next start")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(60))
        #expect(counter.reads == 2, "read at the writer's next start")

        // Frames, and no promise after the loop's other work (the last one has passed, and the
        // writer did not take): read then.
        sink.until.store(0, ordering: .relaxed)
        try channel.writeInbound(Self.frame())
        channel.pipeline.read()
        #expect(counter.reads == 2)
        channel.embeddedEventLoop.run()
        #expect(counter.reads == 3)

        // A read asked for with no frames since the last one, no promise: at once.
        channel.pipeline.read()
        #expect(counter.reads == 4)
        // A read's end with no frame taken in it is not passed on.
        channel.pipeline.fireChannelReadComplete()
        #expect(sink.completed.load(ordering: .relaxed) == 2)
        _ = try channel.finish()
    }

    /// Frames a connector read together reach the writer together: appended without waking it
    /// (`FrameSink.take`), then woken once at the read's end (`readComplete`), so a writer on
    /// another thread cannot take the first of them alone.
    @Test func framesReadTogetherAreTakenTogether() async throws {
        let buffer = IngestBuffer(capacity: 100)
        let taking = Task { await buffer.take(upTo: 100) }
        try await Task.sleep(for: .milliseconds(50))
        buffer.append(contentsOf: [HardeningTests.pending(0)], wakingTheWriter: false)
        try await Task.sleep(for: .milliseconds(200))
        buffer.append(contentsOf: [HardeningTests.pending(1)], wakingTheWriter: false)
        buffer.wakeWriter()
        let batch = await taking.value
        #expect(batch.messages.count == 2, "one take of both, not the first alone")
    }
}
