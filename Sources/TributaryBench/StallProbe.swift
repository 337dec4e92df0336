import Foundation
import Synchronization
import Tributary

#if canImport(Glibc)
import Glibc
#endif

/// A thread of the bench process that sleeps 1 ms at a time and records each wake-up that came
/// more than `thresholdMs` late. Nothing else runs on it, so a late wake-up is the machine
/// stalling (the host, or every core taken): a spell the server's latency shows too, though it
/// is not the server's doing. Printed next to the slow spells, so the two can be matched.
final class StallProbe: Sendable {
    let thresholdMs: Double
    /// When each late wake-up's sleep began (ms since 1970) and how late it woke.
    private let stalls = Mutex<[(atMs: Double, lateMs: Double)]>([])
    private let running = Atomic<Bool>(true)

    init(thresholdMs: Double = 20) {
        self.thresholdMs = thresholdMs
        let thread = Thread { [self] in watch() }
        thread.name = "stall-probe"
        thread.start()
    }

    private func watch() {
        while running.load(ordering: .relaxed) {
            let began = Date().timeIntervalSince1970 * 1000
            let before = ContinuousClock.now
            usleep(1000)
            let late = (ContinuousClock.now - before).inSeconds * 1000 - 1
            record(atMs: began, lateMs: late)
        }
    }

    /// A sleep that began at `atMs` (ms since 1970) and woke `lateMs` late: kept past the threshold.
    func record(atMs: Double, lateMs: Double) {
        if lateMs > thresholdMs { stalls.withLock { $0.append((atMs, lateMs)) } }
    }

    /// Stops the thread (within a millisecond or a stall).
    func stop() { running.store(false, ordering: .relaxed) }

    /// One line: how many stalls, and the five worst with when they began (seconds after
    /// `startMs`, ms since 1970, the origin of `IngestBenchmark.slowSpells`).
    func summary(since startMs: Double) -> String {
        let all = stalls.withLock { $0 }
        guard !all.isEmpty else { return "machine stalls: no 1 ms sleep of the bench's probe thread woke over \(Int(thresholdMs)) ms late" }
        let worst = all.sorted { $0.lateMs > $1.lateMs }.prefix(5).map {
            String(format: "at %.1f s, %.0f ms late", ($0.atMs - startMs) / 1000, $0.lateMs)
        }
        return "machine stalls (1 ms sleeps of the bench's probe thread over \(Int(thresholdMs)) ms late): \(all.count); worst: "
            + worst.joined(separator: "; ")
    }
}
