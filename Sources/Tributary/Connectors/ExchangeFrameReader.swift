import NIOCore
import NIOWebSocket
import Synchronization

/// Where `ExchangeFrameReader` puts the data frames it reads on the event loop, and what paces its
/// reads: the pipeline for a connector (`FrameIngest`); a counter for `bench ingest`'s reading floor.
package protocol FrameSink: AnyObject, Sendable {
    /// Takes one complete data frame; false when there is no room for more (reading pauses).
    /// What it takes may wait for `readComplete()` before the batch writer looks at it.
    func take(_ frame: ByteBufferView) -> Bool
    /// The frames of one read have all been taken.
    func readComplete()
    /// A data message goes to the connection's task instead (too large, fragmented, reserved bits).
    func handingOff()
    /// Data messages handed to the connection's task and not yet taken there: while there are
    /// any, the frames behind them follow them, so a connection's messages keep their order.
    var messagesHandedOff: Int { get }
    /// Reads may wait until then (`NIODeadline` uptime nanoseconds; see `ExchangeFrameReader`).
    var readsMayWaitUntil: UInt64 { get }
    /// Reading paused for want of room.
    func paused()
    /// Whether there is room again; asked every `ExchangeFrameReader.pauseCheck` while paused.
    func hasRoom() -> Bool
    /// Reading goes on after a pause that began at `pausedSince`.
    func resumed(pausedSince: ContinuousClock.Instant)
}

/// What a connection's frames go through, on the event loop (`ExchangeFrameReader`) or in the
/// connector's task: the normalizer, the connection's `IngestSession` and the pipeline.
final class FrameIngest: FrameSink {
    let context: ConnectorContext
    let normalizer: Normalizer
    let lastReceived: LastSeen
    private let session: Mutex<IngestSession>
    /// Data messages handed to the connector's task and not yet ingested there. While any are,
    /// the event loop hands on the ones behind them too, so each connection's frames keep their order.
    let handedOff = Atomic<Int>(0)

    init(context: ConnectorContext, normalizer: Normalizer, session: IngestSession, lastReceived: LastSeen) {
        self.context = context
        self.normalizer = normalizer
        self.session = Mutex(session)
        self.lastReceived = lastReceived
    }

    func ingest(_ frame: some Collection<UInt8>, wakingTheWriter: Bool = true) {
        lastReceived.nanos.store(WebSocketConnector.nowNanos(), ordering: .relaxed)
        session.withLock { context.ingest(frame, normalizer: normalizer, session: &$0, wakingTheWriter: wakingTheWriter) }
    }

    /// Hands the connection's last trade ids to the connector (see `IngestSession.publishTradeIDs`).
    func publishTradeIDs() {
        session.withLock { $0.publishTradeIDs(to: context.state.counters) }
    }

    func take(_ frame: ByteBufferView) -> Bool {
        ingest(frame, wakingTheWriter: false)
        return context.buffer.hasRoom
    }

    func readComplete() { context.buffer.wakeWriter() }

    func handingOff() { handedOff.add(1, ordering: .releasing) }
    var messagesHandedOff: Int { handedOff.load(ordering: .acquiring) }
    var readsMayWaitUntil: UInt64 { context.buffer.readsMayWaitUntil }
    func paused() { context.spoolFull() }

    func hasRoom() -> Bool {
        // A pause is no sign of a dead connection.
        lastReceived.nanos.store(WebSocketConnector.nowNanos(), ordering: .relaxed)
        return context.buffer.hasRoom
    }

    func resumed(pausedSince: ContinuousClock.Instant) { context.spoolHasRoom(pausedSince: pausedSince) }
}

/// How a connector reads its WebSocket: complete text and binary frames up to `inlineLimit` are
/// normalized and buffered right here on the event loop, with no hop to a task per frame.
/// Larger frames, fragmented messages, frames with reserved bits and control frames go on to the
/// connector's task and swift-websocket's handler (pings, the close handshake, size limits).
///
/// Reads are paced as well. While messages stream in, the batch writer lingers
/// (`BATCH_LINGER_MS`) and starts a write at most once per linger, so a frame read earlier only
/// waits in the buffer: reads wait until the writer's next start
/// (`IngestBuffer.readsMayWaitUntil`), never longer than `longestHold`, and the frames that came
/// meanwhile are read in one go, one wake-up for several frames. Their arrival starts the write
/// (the writer, with nothing else to take, waits for them; one that lingers already waits a
/// little past that start, `BatchWriter.defaultHeldReadsWait`, so they make its batch). A lone frame
/// after a quiet spell is read at once (the writer then holds nothing). While the spool is full
/// (`SPOOL_MAX_BYTES`) nothing more is read until it has room, checked every `pauseCheck`.
final class ExchangeFrameReader: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// Frames larger than this are normalized in the connector's task, off the event loop.
    static let inlineLimit = 64 * 1024
    /// The longest a read is held for the writer: the longest linger (`BATCH_LINGER_MS` is at most
    /// 1,000). A shorter bound would cost a wake-up with nothing to read whenever the linger is
    /// longer than the gaps between frames.
    static let longestHold = TimeAmount.seconds(1)
    /// How often a connection paused by a full spool looks for room.
    static let pauseCheck = TimeAmount.milliseconds(50)

    let sink: any FrameSink
    private var timer: Scheduled<Void>?
    /// A read was asked for while held or paused.
    private var readWanted = false
    private var pausedAt: ContinuousClock.Instant?
    private var inFragmentedMessage = false
    /// Frames went to the sink since the last read was asked for.
    private var tookFrames = false
    /// Frames went to the sink since the last `readComplete()`.
    private var unannounced = false
    private var removed = false

    init(sink: any FrameSink) {
        self.sink = sink
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            if frame.fin, !inFragmentedMessage, frame.reservedBits.isEmpty, frame.length <= Self.inlineLimit,
                sink.messagesHandedOff == 0
            {
                tookFrames = true
                if !unannounced {
                    unannounced = true
                    // Frames can come without a read's end after them (those a handshake buffered
                    // are passed on when it completes): then at the end of this event-loop turn.
                    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
                    context.eventLoop.execute { bound.value.announceTaken() }
                }
                if !sink.take(frame.unmaskedData.readableBytesView) { pause(context: context) }
                return
            }
            // The task that takes it next must not overtake what this read took.
            announceTaken()
            if frame.fin { sink.handingOff() } else { inFragmentedMessage = true }
        case .continuation where frame.fin && inFragmentedMessage:
            inFragmentedMessage = false
            sink.handingOff()
        default:
            break
        }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        announceTaken()
        context.fireChannelReadComplete()
    }

    private func announceTaken() {
        guard unannounced else { return }
        unannounced = false
        sink.readComplete()
    }

    func read(context: ChannelHandlerContext) {
        guard timer == nil, pausedAt == nil else {
            readWanted = true
            return
        }
        let now = NIODeadline.now().uptimeNanoseconds
        let until = sink.readsMayWaitUntil
        guard until > now else {
            guard tookFrames else { return context.read() }
            // What was just read may start a write (the writer's turn on this event loop comes
            // after this read's), which then tells when the next one starts: decide after it, so
            // the next frame waits with the others instead of being read on its own.
            tookFrames = false
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let (reader, context) = bound.value
                if !reader.removed { reader.read(context: context) }
            }
            return
        }
        tookFrames = false
        let hold = TimeAmount.nanoseconds(Int64(min(until - now, UInt64(Self.longestHold.nanoseconds))))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: hold) {
            let (reader, context) = bound.value
            reader.timer = nil
            reader.readWanted = false
            context.read()
        }
    }

    /// Stops reading until the spool has room (see `ConnectorContext.spoolFull`).
    private func pause(context: ChannelHandlerContext) {
        guard pausedAt == nil else { return }
        pausedAt = .now
        timer?.cancel()
        timer = nil
        readWanted = true
        sink.paused()
        checkForRoom(context: context)
    }

    private func checkForRoom(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: Self.pauseCheck) {
            let (reader, context) = bound.value
            reader.timer = nil
            guard reader.sink.hasRoom(), let pausedAt = reader.pausedAt else {
                reader.checkForRoom(context: context)
                return
            }
            reader.pausedAt = nil
            reader.sink.resumed(pausedSince: pausedAt)
            if reader.readWanted {
                reader.readWanted = false
                reader.read(context: context)
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        announceTaken()
        removed = true
        timer?.cancel()
        timer = nil
    }
}
