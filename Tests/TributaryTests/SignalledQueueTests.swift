import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// The bounded queue behind the ingest buffer (refuse new) and each realtime client (drop oldest).
@Suite struct SignalledQueueTests {
    @Test func refuseNewKeepsTheOldestAndCountsTheRest() async {
        let queue = SignalledQueue<Int>(capacity: 3, overflow: .refuseNew)
        #expect(queue.append(contentsOf: [1, 2]) == 0)
        #expect(queue.append(contentsOf: [3, 4, 5]) == 2)
        #expect(queue.droppedCount == 2)
        #expect(await queue.take(upTo: 2) == [1, 2])
        #expect(await queue.take() == [3])
        queue.close()
        #expect(queue.append(contentsOf: [6]) == 1, "a closed ingest buffer refuses, and says so")
        #expect(await queue.take() == [])
    }

    @Test func dropOldestKeepsTheNewest() async {
        let queue = SignalledQueue<Int>(capacity: 3, overflow: .dropOldest)
        #expect(queue.append(contentsOf: [1, 2, 3, 4]) == 1)
        #expect(queue.append(contentsOf: [5]) == 1)
        #expect(await queue.take() == [3, 4, 5])
        queue.close()
        #expect(queue.append(contentsOf: [6]) == 0, "a closed client's updates are ignored")
        #expect(await queue.take() == [])
    }

    @Test func aWaitingConsumerWakesForAppendsCloseAndCancellation() async {
        let queue = SignalledQueue<Int>(capacity: 10, overflow: .refuseNew)
        async let first = queue.take()
        try? await Task.sleep(for: .milliseconds(50))
        queue.append(contentsOf: [7])
        #expect(await first == [7])
        async let second = queue.take()
        try? await Task.sleep(for: .milliseconds(50))
        queue.close()
        #expect(await second == [])
        let other = SignalledQueue<Int>(capacity: 10, overflow: .dropOldest)
        let waiting = Task { await other.take() }
        try? await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        #expect(await waiting.value == [])
    }
}
