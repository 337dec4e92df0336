import NIOCore

/// Holds a connection's socket reads until shortly before the pipeline's next write can start,
/// so the frames that arrive meanwhile are read together.
///
/// While messages stream in, the batch writer lingers (`BATCH_LINGER_MS`) and starts a write at
/// most once per linger; a frame read earlier waits in the buffer for it all the same. Reading
/// each frame as it comes costs a wake-up of the event loop and of the connector's task per
/// frame; reading them just before the write starts costs one per write, and every frame still
/// makes the same write. `holdUntil` says until when reads may wait (uptime nanoseconds, the
/// clock of `NIODeadline`; 0 or a past time: no hold). A read is asked for `margin` before that
/// time, so its frames are normalized and buffered when the write starts, and never held more
/// than `longestHold`. A lone frame after a quiet spell is read at once: the writer then holds
/// nothing.
final class ReadPacer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = NIOAny

    /// How long before the writer's next start a held read is asked for.
    static let margin = TimeAmount.microseconds(1_000)
    /// The longest any read is held, whatever `holdUntil` says.
    static let longestHold = TimeAmount.milliseconds(50)

    let holdUntil: @Sendable () -> UInt64
    private var heldRead: Scheduled<Void>?
    /// Reads asked for and passed on after a hold, and at once.
    private(set) var held = 0
    private(set) var passed = 0

    init(holdUntil: @escaping @Sendable () -> UInt64) {
        self.holdUntil = holdUntil
    }

    func read(context: ChannelHandlerContext) {
        guard heldRead == nil else { return }
        let now = NIODeadline.now()
        let margin = UInt64(Self.margin.nanoseconds)
        let until = holdUntil()
        guard until > now.uptimeNanoseconds, until - now.uptimeNanoseconds > margin else {
            passed += 1
            context.read()
            return
        }
        let hold = min(until - now.uptimeNanoseconds - margin, UInt64(Self.longestHold.nanoseconds))
        held += 1
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        heldRead = context.eventLoop.scheduleTask(deadline: now + .nanoseconds(Int64(hold))) {
            let (pacer, context) = bound.value
            pacer.heldRead = nil
            context.read()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        heldRead?.cancel()
        heldRead = nil
    }
}
