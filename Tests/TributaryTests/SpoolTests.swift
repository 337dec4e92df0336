import Foundation
import Logging
import Synchronization
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// The durable spool on a real directory: records round-trip, survive the process (a new `Spool`
/// on the same files), are cut at a torn tail or damage instead of failing the start, and their
/// segments go once released. And the ingest buffer in front of it keeps the order of arrival.
@Suite struct SpoolTests {
    static func directory() -> String {
        let path = NSTemporaryDirectory() + "tributary-spool-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func message(_ index: Int, connector: String = "conn_spool") -> PendingMessage {
        let message = MarketMessage(
            exchange: .okx,
            channel: "trades",
            messageType: .trade,
            instrument: "BTC-USDT",
            symbol: "BTC-USDT",
            price: "100.\(index)",
            quantity: "0.00000001",
            side: index % 2 == 0 ? "buy" : "sell",
            sourceID: "okx:trades:BTC-USDT:\(index)",
            exchangeTimestampMs: 1_767_225_600_000 + Int64(index),
            fields: ["trade_id": .string("\(index)"), "note": .string("quote \" and \u{1} and ü")],
            raw: ["tradeId": .string("\(index)")]
        )
        return PendingMessage(
            connectorID: connector,
            sessionID: "ws_spool",
            sourceID: message.sourceID ?? "",
            message: message,
            receivedAt: Date(timeIntervalSince1970: 1_767_225_600.123456),
            data: message.serializedJSON
        )
    }

    static func spool(_ directory: String, maxBytes: Int = 1 << 30, segmentBytes: Int = 64 << 20) throws -> Spool {
        try Spool(directory: directory, maxBytes: maxBytes, segmentBytes: segmentBytes, fsync: .batch, logger: Logger(label: "test"))
    }

    /// Opens spools whose fsyncs it counts (they still reach the disk).
    final class FsyncCounter: Sendable {
        private let calls = Mutex(0)
        var count: Int { calls.withLock { $0 } }

        func spool(_ directory: String, segmentBytes: Int) throws -> Spool {
            try Spool(
                directory: directory,
                maxBytes: 1 << 30,
                segmentBytes: segmentBytes,
                fsync: .batch,
                logger: Logger(label: "test"),
                syncFile: { [self] fd in
                    calls.withLock { $0 += 1 }
                    Spool.fsyncFile(fd)
                }
            )
        }
    }

    static func segments(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".seg") }.sorted()
    }

    @Test func recordsRoundTripExactly() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spool = try Self.spool(directory)
        let written = (0..<5).map { Self.message($0) }
        _ = try spool.append(written, heldInMemory: false)
        #expect(spool.unread == 5)
        let read = spool.read(limit: 100)
        #expect(spool.unread == 0)
        #expect(read.count == 5)
        for (original, copy) in zip(written, read.map(\.message)) {
            #expect(copy.connectorID == original.connectorID)
            #expect(copy.sessionID == original.sessionID)
            #expect(copy.sourceID == original.sourceID)
            #expect(copy.data == original.data)
            #expect(Timestamp.microseconds(copy.receivedAt) == Timestamp.microseconds(original.receivedAt))
            #expect(copy.message.price == original.message.price)
            #expect(copy.message.quantity == original.message.quantity)
            #expect(copy.message.side == original.message.side)
            #expect(copy.message.exchangeTimestampMs == original.message.exchangeTimestampMs)
            #expect(copy.message.fields == original.message.fields)
            #expect(StoredMessage(id: 1, pending: copy).update == StoredMessage(id: 1, pending: original).update)
        }
        #expect(spool.read(limit: 100).isEmpty)
    }

    /// The records' checksum is CRC-32C (the standard check value), the same with the CPU's
    /// instruction as with the tables, for every length and alignment.
    @Test func theChecksumIsCRC32CEitherWay() {
        let check = Array("123456789".utf8)
        #expect(check.withUnsafeBytes { CRC32C.checksum($0) } == 0xE306_9283)
        #expect(check.withUnsafeBytes { CRC32C.tableChecksum($0) } == 0xE306_9283)
        #expect([UInt8]().withUnsafeBytes { CRC32C.checksum($0) } == 0)
        #if arch(x86_64)
        #expect(CRC32C.hardware, "x86-64 machines have had SSE 4.2 since 2008")
        #endif
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<400).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { all in
            for start in 0..<9 {
                for length in 0..<(all.count - start) where length < 40 || length % 13 == 0 {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    #expect(CRC32C.checksum(slice) == CRC32C.tableChecksum(slice), "\(length) bytes from \(start)")
                }
            }
        }
    }

    /// A message with every column empty: none of them comes back as an empty string or zero.
    static func bareMessage() -> PendingMessage {
        let message = MarketMessage(exchange: .kraken, channel: "ticker", messageType: .other, raw: ["x": .null])
        return PendingMessage(
            connectorID: "conn_bare",
            sessionID: "ws_bare",
            sourceID: "ws_bare:1",
            message: message,
            receivedAt: Date(timeIntervalSince1970: 0)
        )
    }

    /// Records carry the message's columns, so they come back without parsing `data`; the columns
    /// are the ones the message had, even where `data` would say otherwise.
    @Test func recordsCarryTheColumnsOfTheirMessage() throws {
        for original in [Self.message(7), Self.bareMessage()] {
            var payload: [UInt8] = []
            SpoolRecord.encode(original, flags: 0, into: &payload)
            #expect(payload.first == SpoolRecord.kindMessageColumns)
            let copy = try payload.withUnsafeBytes { try SpoolRecord.decode($0) }
            #expect(copy.data == original.data)
            var expected = original.message
            expected.sourceID = nil  // kept once, as the pending message's `sourceID`
            expected.raw = .null  // kept in `data`
            #expect(copy.message == expected)
            #expect(StoredMessage(id: 9, pending: copy).update == StoredMessage(id: 9, pending: original).update)
            #expect(StoredMessage(id: nil, pending: copy).update == StoredMessage(id: nil, pending: original).update)
            // Cut anywhere, a record is refused, never read short.
            for length in 1..<payload.count {
                #expect(throws: SpoolCorruption.self) { try payload[..<length].withUnsafeBytes { try SpoolRecord.decode($0) } }
            }
        }
        // The columns come from the record, not from `data` (which is not parsed again).
        let accepted = Self.message(8)
        let original = PendingMessage(
            connectorID: accepted.connectorID,
            sessionID: accepted.sessionID,
            sourceID: accepted.sourceID,
            message: accepted.message,
            receivedAt: accepted.receivedAt,
            data: #"{"price":"1"}"#
        )
        var payload: [UInt8] = []
        SpoolRecord.encode(original, flags: 0, into: &payload)
        let decoded = try payload.withUnsafeBytes { try SpoolRecord.decode($0) }
        #expect(decoded.data == #"{"price":"1"}"#)
        #expect(decoded.message.price == "100.8")
        #expect(decoded.message.instrument == "BTC-USDT")
        #expect(decoded.message.fields["note"] == .string("quote \" and \u{1} and ü"))
    }

    /// A spool written by an earlier version (kind 1: `data` only) is still read after an upgrade.
    @Test func recordsOfEarlierVersionsAreReadFromTheirData() throws {
        for original in [Self.message(3), Self.bareMessage()] {
            var payload: [UInt8] = [SpoolRecord.kindMessage, SpoolRecord.flagAnnounced]
            SpoolRecord.appendInteger(UInt64(bitPattern: Timestamp.microseconds(original.receivedAt)), to: &payload)
            for text in [original.connectorID, original.sessionID, original.sourceID, original.data] {
                SpoolRecord.appendString(text, to: &payload)
            }
            #expect(payload.withUnsafeBytes { SpoolRecord.header($0)?.flags } == SpoolRecord.flagAnnounced)
            let copy = try payload.withUnsafeBytes { try SpoolRecord.decode($0) }
            #expect(copy.sourceID == original.sourceID)
            let announced = copy.announced.load(ordering: .relaxed)
            #expect(announced)
            #expect(copy.message.price == original.message.price)
            #expect(copy.message.exchangeTimestampMs == original.message.exchangeTimestampMs)
            #expect(copy.message.fields == original.message.fields)
            // The same update (its extra fields in `data`'s key order, not the normalizer's).
            let (copied, sent) = (StoredMessage(id: 2, pending: copy).update, StoredMessage(id: 2, pending: original).update)
            #expect(try JSONValue.parse(copied) == JSONValue.parse(sent))
        }
    }

    @Test func aLiveReaderSkipsCopiesHeldInMemoryButARestartReplaysEverything() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let spool = try Self.spool(directory)
            _ = try spool.append([Self.message(0), Self.message(1)], heldInMemory: true)
            _ = try spool.append([Self.message(2)], heldInMemory: false)
            #expect(spool.read(limit: 10).map(\.message.sourceID) == ["okx:trades:BTC-USDT:2"])
            // Nothing released: as if the process died before the database had any of them.
        }
        let restarted = try Self.spool(directory)
        #expect(restarted.snapshot.recoveredRecords == 3)
        #expect(restarted.read(limit: 10).map(\.message.sourceID) == (0..<3).map { "okx:trades:BTC-USDT:\($0)" })
    }

    @Test func aTornTailIsCutAndTheStartGoesOn() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let spool = try Self.spool(directory)
            _ = try spool.append((0..<3).map { Self.message($0) }, heldInMemory: false)
        }
        let segment = (directory as NSString).appendingPathComponent(try #require(Self.segments(directory).last))
        let intact = try #require(FileManager.default.attributesOfItem(atPath: segment)[.size] as? Int)
        // Half a record: a length that promises more than follows (a crash mid-append).
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        handle.seekToEndOfFile()
        handle.write(Data([200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]))
        try handle.close()

        let restarted = try Self.spool(directory)
        #expect(restarted.snapshot.recoveredRecords == 3)
        #expect(restarted.snapshot.truncatedBytes == 11)
        #expect(restarted.snapshot.corruptSegments == 0, "a torn tail is what a crash leaves, not damage")
        #expect(try FileManager.default.attributesOfItem(atPath: segment)[.size] as? Int == intact)
        #expect(restarted.read(limit: 10).count == 3)
    }

    @Test func aDamagedSegmentKeepsItsGoodRecordsAndACopyGoesToCorrupt() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            // Small segments: each append after the first starts a new one.
            let spool = try Self.spool(directory, segmentBytes: 4096)
            for batch in 0..<3 { _ = try spool.append((0..<10).map { Self.message(batch * 10 + $0) }, heldInMemory: false) }
        }
        let names = Self.segments(directory)
        #expect(names.count >= 3)
        // Flip one byte in the middle of the first segment's fourth record or so.
        let first = (directory as NSString).appendingPathComponent(names[0])
        var bytes = try Data(contentsOf: URL(fileURLWithPath: first))
        let middle = bytes.count / 2
        bytes[middle] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: first))

        let restarted = try Self.spool(directory, segmentBytes: 4096)
        let snapshot = restarted.snapshot
        #expect(snapshot.corruptSegments == 1)
        #expect(snapshot.truncatedBytes > 0)
        #expect(snapshot.recoveredRecords > 20 && snapshot.recoveredRecords < 30)
        let corrupt = (directory as NSString).appendingPathComponent("corrupt")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: corrupt)) ?? []).count == 1)
        let replayed = restarted.read(limit: 100).map(\.message.sourceID)
        #expect(replayed.count == snapshot.recoveredRecords)
        #expect(replayed.suffix(20) == (10..<30).map { "okx:trades:BTC-USDT:\($0)" }, "the undamaged segments are whole")
    }

    @Test func releasedSegmentsAreDeletedAndTheSizeLimitIsReported() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spool = try Self.spool(directory, maxBytes: 6000, segmentBytes: 4096)
        var holds: [Int: Int] = [:]
        for batch in 0..<3 {
            let segment = try spool.append((0..<10).map { Self.message(batch * 10 + $0) }, heldInMemory: false)
            holds[segment, default: 0] += 10
        }
        #expect(spool.isFull)
        #expect(Self.segments(directory).count == 3)
        let read = spool.read(limit: 100)
        #expect(read.count == 30)
        spool.release(holds)
        #expect(Self.segments(directory).count == 1, "all but the segment being written are gone")
        #expect(!spool.isFull)
        #expect(spool.snapshot.records == 0)
    }

    /// Connectors append on their event loops, so a rotation must not wait for the disk there: the
    /// closed segments and the new segments' directory entry are put on disk by the next `sync()`
    /// (on a thread pool), and nothing before it.
    @Test func aRotationLeavesItsFsyncsToTheNextSync() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fsyncs = FsyncCounter()
        let spool = try fsyncs.spool(directory, segmentBytes: 4096)
        let atOpen = fsyncs.count
        #expect(atOpen == 1, "opening syncs the directory entry of the first segment")
        var segments: Set<Int> = []
        for batch in 0..<3 {
            segments.insert(try spool.append((0..<10).map { Self.message(batch * 10 + $0) }, heldInMemory: false))
        }
        #expect(segments.count == 3, "two rotations")
        #expect(fsyncs.count == atOpen, "no fsync on the appending thread")
        await spool.sync()
        #expect(fsyncs.count == atOpen + 4, "two closed segments, the directory once, the segment being written")
        await spool.sync()
        #expect(fsyncs.count == atOpen + 4, "nothing new to sync")
        let reopened = try Self.spool(directory, segmentBytes: 4096)
        #expect(reopened.read(limit: 100).count == 30)
    }

    /// With no `sync()` for many rotations (the fsync loop stalled on a slow disk), the closed
    /// segments left open are bounded: past `maxClosedUnsynced` a rotation syncs the oldest itself.
    @Test func closedSegmentsWaitingForTheSyncAreBounded() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fsyncs = FsyncCounter()
        let spool = try fsyncs.spool(directory, segmentBytes: 4096)
        let atOpen = fsyncs.count
        var segments: Set<Int> = []
        let rotations = Spool.maxClosedUnsynced + 4
        for batch in 0...rotations {
            segments.insert(try spool.append((0..<10).map { Self.message(batch * 10 + $0) }, heldInMemory: false))
        }
        #expect(segments.count == rotations + 1)
        #expect(fsyncs.count == atOpen + 4, "the four oldest closed segments, by the rotations")
    }

    /// One append larger than the limit (a failed batch's copy) fills the spool in the segment
    /// being written; once its records are released the spool has room again (connectors
    /// paused on a full spool would otherwise wait for good: nothing appends, so nothing rotates
    /// the segment away), and the next rotation deletes it.
    @Test func aReleasedSegmentBeingWrittenDoesNotKeepTheSpoolFull() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spool = try Self.spool(directory, maxBytes: 6000, segmentBytes: 4096)
        let segment = try spool.append((0..<30).map { Self.message($0) }, heldInMemory: true)
        #expect(spool.isFull)
        spool.release([segment: 30])
        #expect(!spool.isFull, "every record of it is in the database")
        let next = try spool.append((30..<31).map { Self.message($0) }, heldInMemory: true)
        #expect(next != segment)
        #expect(Self.segments(directory).count == 1, "the released segment went at the rotation")
        #expect(spool.snapshot.bytes < 4096)
    }

    @Test func theBufferKeepsArrivalOrderAcrossMemoryAndSpool() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spool = try Self.spool(directory)
        let buffer = IngestBuffer(capacity: 100, spool: spool, mode: .spill, memoryMessages: 3)
        for index in 0..<10 { #expect(buffer.append(contentsOf: [Self.message(index)]) == 0) }
        #expect(spool.unread == 7, "beyond 3 in memory, messages go to the spool")
        var taken: [String] = []
        var holds: [Int: Int] = [:]
        while taken.count < 10 {
            let batch = await buffer.take(upTo: 4)
            taken += batch.messages.map(\.sourceID)
            holds.merge(batch.holds, uniquingKeysWith: +)
        }
        #expect(taken == (0..<10).map { "okx:trades:BTC-USDT:\($0)" })
        #expect(holds.values.reduce(0, +) == 7)
        buffer.release(holds)
        #expect(spool.snapshot.records == 0)
        // Drained: memory again, with no spool copy.
        buffer.append(contentsOf: [Self.message(10)])
        #expect(spool.unread == 0)
        #expect(await buffer.take(upTo: 10).unspooled.count == 1)
    }

    @Test func whileTheDatabaseIsDownEveryMessageHasASpoolCopy() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spool = try Self.spool(directory)
        let buffer = IngestBuffer(capacity: 100, spool: spool, mode: .spill, memoryMessages: 50)
        buffer.append(contentsOf: [Self.message(0), Self.message(1)])
        #expect(spool.snapshot.records == 0, "the database is up: memory only")
        buffer.setDatabaseAvailable(false)
        #expect(spool.snapshot.records == 2, "what was held only in memory got a copy")
        buffer.append(contentsOf: [Self.message(2)])
        #expect(spool.snapshot.records == 3)
        let batch = await buffer.take(upTo: 10)
        #expect(batch.messages.count == 3)
        #expect(batch.unspooled.isEmpty)
        #expect(batch.holds.values.reduce(0, +) == 3)
        // A crash now: a new process replays all three.
        let restarted = try Self.spool(directory)
        #expect(restarted.read(limit: 10).count == 3)
    }

    @Test func alwaysModeCopiesEveryMessage() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spool = try Self.spool(directory)
        let buffer = IngestBuffer(capacity: 100, spool: spool, mode: .always, memoryMessages: 50)
        buffer.append(contentsOf: [Self.message(0), Self.message(1)])
        #expect(spool.snapshot.records == 2)
        #expect(spool.unread == 0, "the writer takes them from memory")
        let batch = await buffer.take(upTo: 10)
        buffer.release(batch.holds)
        #expect(spool.snapshot.records == 0)
    }

    @Test func whileTheDatabaseIsDownUpdatesGoOutAtOnceMarkedNotPersistedAndOnlyOnce() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let broadcaster = Broadcaster()
        let client = broadcaster.register(filter: RealtimeFilter())
        let spool = try Self.spool(directory)
        let buffer = IngestBuffer(
            capacity: 100,
            spool: spool,
            mode: .spill,
            memoryMessages: 50,
            announce: { broadcaster.publish($0.map { StoredMessage(id: nil, pending: $0) }) }
        )
        buffer.append(contentsOf: [Self.message(0)])
        buffer.setDatabaseAvailable(false)
        buffer.append(contentsOf: [Self.message(1)])
        let early = await client.next() ?? []
        #expect(early.count == 2, "the waiting message and the new one, without waiting for the database")
        for update in early {
            let data = try #require(try JSONValue.parse(update)["data"])
            #expect(data["persisted"] == .bool(false))
            #expect(data["id"] == .null)
        }
        // Back: stored, but not sent again; a replay after a crash does not send them either.
        let restarted = try Self.spool(directory)
        #expect(restarted.read(limit: 10).allSatisfy { $0.message.announced.load(ordering: .relaxed) })
        let batch = await buffer.take(upTo: 10)
        let publisher = OrderedPublisher(broadcaster: broadcaster, buffer: buffer)
        let stored = batch.messages.enumerated().map { StoredMessage(id: Int64($0.offset + 1), pending: $0.element) }
        publisher.publish(stored, ticket: 0, takes: batch.takes)
        buffer.setDatabaseAvailable(true)
        buffer.append(contentsOf: [Self.message(2)])
        publisher.publish([StoredMessage(id: 3, pending: Self.message(2))], ticket: 1, takes: [])
        let later = await client.next() ?? []
        #expect(later.count == 1)
        #expect(later.first?.contains(#""id":3"#) == true)
        #expect(later.first?.contains("persisted") == false, "a stored message is just an update, as before")
    }
}
