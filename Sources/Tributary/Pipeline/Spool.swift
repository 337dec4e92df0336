import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// When the spool asks the operating system to put its writes on disk.
public enum SpoolFsync: Sendable, Equatable, CustomStringConvertible {
    /// Group fsync: whenever something was written since the last fsync, one fsync covers it all.
    case batch
    /// At most every this long.
    case interval(Duration)
    /// Never: the kernel writes back on its own (a crash of the process still loses nothing written).
    case off

    public var description: String {
        switch self {
        case .batch: "batch"
        case .interval(let interval): "\(interval.inMilliseconds)ms"
        case .off: "off"
        }
    }
}

/// The durable tail of the ingest buffer: append-only segment files in one directory.
///
/// A segment starts with the 8-byte magic `TRSPOOL1`, then records: a UInt32 payload length, the
/// payload's CRC-32C (both little-endian) and the payload (`SpoolRecord`). Records are only
/// appended; a segment is deleted once every record in it was written to the database (or kept
/// as a dead letter). On start every record left by an earlier run is replayed; a torn tail is
/// truncated and a damaged segment is copied to `corrupt/` and cut at the damage (prior art:
/// Kafka's log segments, SQLite's WAL checksums, Vector's disk buffers, which must never
/// crash-loop on their own files).
///
/// Writers (connectors, through `IngestBuffer`, some on an event loop) and the one reader (the
/// batch writer) each hold their own lock. No fsync runs under either lock or on a writer's
/// thread: `sync()` runs them on a thread pool, also for a segment closed at a rotation and for
/// the directory entry of the segment that followed it.
public final class Spool: Sendable {
    static let magic: [UInt8] = Array("TRSPOOL1".utf8)
    static let recordHeader = 8
    /// A record longer than this is damage, not data (a message is at most a few MiB).
    static let maxRecordBytes = 64 << 20
    /// Closed segments left open for the fsync loop: past these (a loop stalled on a slow disk
    /// through many rotations) a rotation puts the oldest on disk itself.
    static let maxClosedUnsynced = 16

    public let directory: String
    public let maxBytes: Int
    let segmentBytes: Int
    let fsyncPolicy: SpoolFsync
    let logger: Logger
    /// `fsync(2)`; a test passes one that records its calls.
    let syncFile: @Sendable (Int32) -> Void
    private let writer: Mutex<WriterState>
    private let reader: Mutex<ReaderState>
    /// Wakes the fsync loop when something was written.
    private let dirty = SignalledQueue<Bool>(capacity: 1, overflow: .dropOldest)

    struct Segment {
        var bytes: Int
        /// Records not yet written to the database.
        var held = 0
        /// `received_at` (µs) of the first record.
        var oldestMicros: Int64?
    }

    struct WriterState {
        var fd: Int32 = -1
        /// Segments closed by a rotation, still open until `sync()` has put them on disk.
        var closedUnsynced: [Int32] = []
        /// A segment was created since the last `sync()`: its directory entry needs an fsync.
        var directoryUnsynced = false
        var index = 0
        var offset = 0
        var segments: [Int: Segment] = [:]
        /// Records the reader has still to hand out.
        var unread = 0
        /// Segments below this were left by an earlier run: every record in them is replayed.
        var replayBelow = 0
        /// Bytes written and bytes known to be on disk, over the life of the process.
        var written = 0
        var synced = 0
        var totalBytes = 0
        var corruptSegments = 0
        var truncatedBytes = 0
        var recoveredRecords = 0
        var writeFailures = 0
    }

    struct ReaderState {
        var index = 0
        var offset = 0
        var fd: Int32 = -1
    }

    /// Opens (creating it if needed) the spool in `directory` and recovers what an earlier run left.
    public init(
        directory: String,
        maxBytes: Int,
        segmentBytes: Int = 64 << 20,
        fsync: SpoolFsync,
        logger: Logger,
        syncFile: (@Sendable (Int32) -> Void)? = nil
    ) throws {
        self.directory = directory
        self.syncFile = syncFile ?? Spool.fsyncFile
        self.maxBytes = maxBytes
        // At most an eighth of the limit: the segment being written is only deleted once full and
        // released, so it must never be what keeps the spool at its limit.
        self.segmentBytes = max(4096, min(segmentBytes, maxBytes / 8))
        self.fsyncPolicy = fsync
        self.logger = logger
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var state = WriterState()
        try Self.recover(directory: directory, into: &state, logger: logger)
        state.replayBelow = (state.segments.keys.max() ?? 0) + 1
        state.index = state.replayBelow
        try Self.openSegment(directory: directory, state: &state)
        Self.syncDirectory(directory, self.syncFile)
        let first = state.segments.keys.min() ?? state.index
        writer = Mutex(state)
        reader = Mutex(ReaderState(index: first, offset: Self.magic.count))
        if state.recoveredRecords > 0 || state.corruptSegments > 0 {
            logger.notice(
                "spool recovered records left by an earlier run; replaying them",
                metadata: [
                    "records": "\(state.recoveredRecords)", "bytes": "\(state.totalBytes)", "corrupt_segments": "\(state.corruptSegments)",
                    "truncated_bytes": "\(state.truncatedBytes)",
                ]
            )
        }
    }

    deinit {
        writer.withLock { state in
            if state.fd >= 0 { close(state.fd) }
            for fd in state.closedUnsynced { close(fd) }
        }
        reader.withLock { if $0.fd >= 0 { close($0.fd) } }
    }

    static func path(_ directory: String, _ index: Int) -> String {
        (directory as NSString).appendingPathComponent(String(format: "%016d.seg", index))
    }

    // MARK: Writing

    /// Appends one record per message in one write; returns the segment they went into (they are
    /// held there until `release`). `heldInMemory` marks copies whose originals stay in memory:
    /// the live reader skips them. Throws when the disk refuses the write.
    func append(_ messages: some Collection<PendingMessage>, heldInMemory: Bool) throws -> Int {
        let flags = heldInMemory ? SpoolRecord.flagHeldInMemory : 0
        return try append(
            count: messages.count,
            oldestMicros: messages.first.map { Timestamp.microseconds($0.receivedAt) },
            heldInMemory: heldInMemory
        ) { payload in
            for message in messages { payload(message.receivedAt) { SpoolRecord.encode(message, flags: flags, into: &$0) } }
        }
    }

    /// Appends `count` records, each written by `encode` through the `record` callback it is
    /// given, in one write; returns the segment they went into.
    func append(
        count: Int,
        oldestMicros: Int64?,
        heldInMemory: Bool,
        encode: ((Date, (inout [UInt8]) -> Void) -> Void) -> Void
    ) throws -> Int {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count * 512)
        var payload: [UInt8] = []
        encode { _, write in
            payload.removeAll(keepingCapacity: true)
            write(&payload)
            let crc = payload.withUnsafeBytes { CRC32C.checksum($0) }
            SpoolRecord.appendUInt32(UInt32(truncatingIfNeeded: payload.count), to: &bytes)
            SpoolRecord.appendUInt32(crc, to: &bytes)
            bytes.append(contentsOf: payload)
        }
        let oldest = oldestMicros
        let index = try writer.withLock { state throws -> Int in
            if state.offset > Self.magic.count, state.offset + bytes.count > segmentBytes {
                try rotate(&state)
            }
            try Self.writeAll(state.fd, bytes, path: Self.path(directory, state.index))
            state.offset += bytes.count
            state.written += bytes.count
            state.totalBytes += bytes.count
            state.segments[state.index, default: Segment(bytes: 0)].bytes += bytes.count
            state.segments[state.index, default: Segment(bytes: 0)].held += count
            if state.segments[state.index]?.oldestMicros == nil { state.segments[state.index]?.oldestMicros = oldest }
            if !heldInMemory { state.unread += count }
            return state.index
        }
        if fsyncPolicy != .off { dirty.append(contentsOf: [true]) }
        return index
    }

    /// Closes the full segment and starts the next one. Unless fsync is off, the closed segment
    /// stays open until the next `sync()` has put it on disk, together with the new segment's
    /// directory entry: the writer may be an event loop, which must not wait for a disk. A closed
    /// segment whose records were all released already goes at once (nothing else would release it).
    private func rotate(_ state: inout WriterState) throws {
        let closed = state.index
        let deletable = state.segments[closed].map { $0.held == 0 } ?? false
        if fsyncPolicy == .off || deletable {
            close(state.fd)
        } else {
            if state.closedUnsynced.count >= Self.maxClosedUnsynced {
                let oldest = state.closedUnsynced.removeFirst()
                syncFile(oldest)
                close(oldest)
            }
            state.closedUnsynced.append(state.fd)
        }
        state.fd = -1
        state.index += 1
        try Self.openSegment(directory: directory, state: &state)
        state.directoryUnsynced = fsyncPolicy != .off
        if deletable, let segment = state.segments[closed] {
            state.totalBytes -= segment.bytes
            state.segments[closed] = nil
            unlink(Self.path(directory, closed))
        }
    }

    private static func openSegment(directory: String, state: inout WriterState) throws {
        let path = Self.path(directory, state.index)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SpoolError("cannot create \(path): \(String(cString: strerror(errno)))") }
        do {
            try writeAll(fd, magic, path: path)
        } catch {
            close(fd)
            throw error
        }
        state.fd = fd
        state.offset = magic.count
        state.totalBytes += magic.count
        state.segments[state.index] = Segment(bytes: magic.count)
    }

    @Sendable static func fsyncFile(_ fd: Int32) { _ = fsync(fd) }

    /// A new file's directory entry must survive a crash too.
    private static func syncDirectory(_ directory: String, _ syncFile: (Int32) -> Void) {
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            syncFile(directoryFD)
            close(directoryFD)
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let result = write(fd, buffer.baseAddress.map { $0 + done }, buffer.count - done)
                if result < 0 {
                    if errno == EINTR { continue }
                    throw SpoolError("cannot write \(path): \(String(cString: strerror(errno)))")
                }
                done += result
            }
        }
    }

    /// Puts everything written so far on disk, on a thread pool: the segment being written (one
    /// fsync for all of it), segments closed since the last call, and the directory entry of a
    /// segment created since then.
    func sync() async {
        struct Work: Sendable {
            var current: Int32 = -1
            var closed: [Int32] = []
            var directory = false
            var written = 0
        }
        let work = writer.withLock { state -> Work in
            var work = Work(closed: state.closedUnsynced, directory: state.directoryUnsynced)
            state.closedUnsynced = []
            state.directoryUnsynced = false
            if state.written > state.synced, state.fd >= 0 {
                // Counted as synced only if this fsync covers it (a `dup` can fail: no fd left).
                work.current = dup(state.fd)
                if work.current >= 0 { work.written = state.written }
            }
            return work
        }
        guard work.current >= 0 || !work.closed.isEmpty || work.directory else { return }
        let (directory, syncFile) = (self.directory, self.syncFile)
        let syncAll: @Sendable () -> Void = {
            for fd in work.closed { syncFile(fd) }
            if work.directory { Self.syncDirectory(directory, syncFile) }
            if work.current >= 0 { syncFile(work.current) }
        }
        // The shared pool never stops; were it to, the caller's thread does it.
        if (try? await NIOThreadPool.singleton.runIfActive(syncAll)) == nil { syncAll() }
        for fd in work.closed { close(fd) }
        if work.current >= 0 { close(work.current) }
        if work.current >= 0 { writer.withLock { $0.synced = max($0.synced, work.written) } }
    }

    /// The fsync loop of the `batch` and `interval` policies; ends with a last fsync when cancelled.
    func runSync() async {
        switch fsyncPolicy {
        case .off: return
        case .batch:
            while !Task.isCancelled {
                let woken = await dirty.take()
                if woken.isEmpty { break }
                await sync()
            }
        case .interval(let interval):
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await sync()
            }
        }
        await sync()
    }

    func stopSync() { dirty.close() }

    // MARK: Reading

    /// Reads up to `limit` records for the database, oldest first: in segments of earlier runs
    /// every record, in this run's the ones not held in memory. Each comes with its segment.
    func read(limit: Int) -> [(message: PendingMessage, segment: Int)] {
        read(limit: limit) { payload throws(SpoolCorruption) in try SpoolRecord.decode(payload) }.map { ($0.record, $0.segment) }
    }

    /// `read(limit:)` for records of any kind, decoded by `decode`.
    func read<Record>(
        limit: Int,
        decode: (UnsafeRawBufferPointer) throws(SpoolCorruption) -> Record
    ) -> [(record: Record, segment: Int)] {
        var result: [(record: Record, segment: Int)] = []
        var yielded = 0
        let (end, replayBelow) = writer.withLock { (SpoolPosition(segment: $0.index, offset: $0.offset), $0.replayBelow) }
        var reachedEnd = false
        reader.withLock { cursor in
            while result.count < limit {
                if cursor.index > end.segment { break }
                let segmentEnd: Int
                if cursor.index == end.segment {
                    segmentEnd = end.offset
                } else {
                    guard let size = fileSize(cursor.index) else {
                        advance(&cursor)
                        continue
                    }
                    segmentEnd = size
                }
                if cursor.offset >= segmentEnd {
                    if cursor.index == end.segment {
                        reachedEnd = true
                        break
                    }
                    advance(&cursor)
                    continue
                }
                if cursor.fd < 0 {
                    cursor.fd = open(Self.path(directory, cursor.index), O_RDONLY | O_CLOEXEC)
                    if cursor.fd < 0 {
                        advance(&cursor)
                        continue
                    }
                }
                let chunk = min(segmentEnd - cursor.offset, 4 << 20)
                var bytes = [UInt8](repeating: 0, count: chunk)
                let got = bytes.withUnsafeMutableBytes { pread(cursor.fd, $0.baseAddress, chunk, off_t(cursor.offset)) }
                guard got > 0 else {
                    damaged(cursor.index, at: cursor.offset, "read failed")
                    advance(&cursor)
                    continue
                }
                var consumed = 0
                var damage: String?
                bytes.withUnsafeBytes { buffer in
                    let buffer = UnsafeRawBufferPointer(rebasing: buffer[..<got])
                    while result.count < limit {
                        switch Self.parseRecord(buffer, at: consumed) {
                        case .record(let payload, let next):
                            consumed = next
                            guard let header = SpoolRecord.header(payload) else {
                                damage = "unknown record"
                                return
                            }
                            if cursor.index >= replayBelow, header.flags & SpoolRecord.flagHeldInMemory != 0 { continue }
                            do {
                                result.append((try decode(payload), cursor.index))
                                yielded += 1
                            } catch {
                                damage = "\(error)"
                                return
                            }
                        case .incomplete:
                            return
                        case .damaged(let reason):
                            damage = reason
                            return
                        }
                    }
                }
                if let damage {
                    damaged(cursor.index, at: cursor.offset + consumed, damage)
                    advance(&cursor)
                    continue
                }
                if consumed == 0 {
                    // A record larger than 4 MiB: read it whole.
                    guard case .incomplete(let needed) = Self.parseHeaderOnly(bytes, got), needed <= segmentEnd - cursor.offset else {
                        damaged(cursor.index, at: cursor.offset, "record runs past the end of its segment")
                        advance(&cursor)
                        continue
                    }
                    var large = [UInt8](repeating: 0, count: needed)
                    let read = large.withUnsafeMutableBytes { pread(cursor.fd, $0.baseAddress, needed, off_t(cursor.offset)) }
                    guard read == needed else {
                        damaged(cursor.index, at: cursor.offset, "short read")
                        advance(&cursor)
                        continue
                    }
                    large.withUnsafeBytes { buffer in
                        if case .record(let payload, _) = Self.parseRecord(buffer, at: 0),
                            let header = SpoolRecord.header(payload),
                            cursor.index < replayBelow || header.flags & SpoolRecord.flagHeldInMemory == 0,
                            let record = try? decode(payload)
                        {
                            result.append((record, cursor.index))
                            yielded += 1
                        }
                    }
                    cursor.offset += needed
                    continue
                }
                cursor.offset += consumed
            }
        }
        writer.withLock { state in
            if reachedEnd, state.index == end.segment, state.offset == end.offset {
                state.unread = 0
            } else {
                state.unread = max(0, state.unread - yielded)
            }
        }
        return result
    }

    private func advance(_ cursor: inout ReaderState) {
        if cursor.fd >= 0 { close(cursor.fd) }
        cursor.fd = -1
        let next = writer.withLock { state in state.segments.keys.filter { $0 > cursor.index }.min() ?? state.index }
        cursor.index = max(next, cursor.index + 1)
        cursor.offset = Self.magic.count
    }

    private func fileSize(_ index: Int) -> Int? {
        writer.withLock { $0.segments[index]?.bytes }
    }

    private func damaged(_ index: Int, at offset: Int, _ reason: String) {
        writer.withLock { $0.corruptSegments += 1 }
        logger.error(
            "spool segment damaged while reading; skipping the rest of it",
            metadata: ["segment": "\(Self.path(directory, index))", "offset": "\(offset)", "reason": "\(reason)"]
        )
    }

    enum Parsed {
        case record(UnsafeRawBufferPointer, next: Int)
        case incomplete(needed: Int)
        case damaged(String)
    }

    /// The record at `offset` of `buffer`, checked against its length and CRC.
    static func parseRecord(_ buffer: UnsafeRawBufferPointer, at offset: Int) -> Parsed {
        guard buffer.count - offset >= recordHeader else { return .incomplete(needed: recordHeader) }
        var length: UInt32 = 0
        var crc: UInt32 = 0
        for index in 0..<4 {
            length |= UInt32(buffer[offset + index]) << (8 * index)
            crc |= UInt32(buffer[offset + 4 + index]) << (8 * index)
        }
        let size = Int(length)
        guard size > 0, size <= maxRecordBytes else { return .damaged("record length \(size) out of range") }
        guard buffer.count - offset - recordHeader >= size else { return .incomplete(needed: recordHeader + size) }
        let payload = UnsafeRawBufferPointer(rebasing: buffer[(offset + recordHeader)..<(offset + recordHeader + size)])
        guard CRC32C.checksum(payload) == crc else { return .damaged("checksum mismatch") }
        return .record(payload, next: offset + recordHeader + size)
    }

    static func parseHeaderOnly(_ bytes: [UInt8], _ count: Int) -> Parsed {
        bytes.withUnsafeBytes { parseRecord(UnsafeRawBufferPointer(rebasing: $0[..<min(count, recordHeader)]), at: 0) }
    }

    // MARK: Releasing

    /// The records counted in `holds` (segment → records) are in the database: segments left with
    /// none (except the one being written) are deleted.
    func release(_ holds: [Int: Int]) {
        guard !holds.isEmpty else { return }
        let deletable = writer.withLock { state -> [Int] in
            var deletable: [Int] = []
            for (index, count) in holds {
                guard var segment = state.segments[index] else { continue }
                segment.held = max(0, segment.held - count)
                state.segments[index] = segment
                if segment.held == 0, index != state.index {
                    deletable.append(index)
                    state.totalBytes -= segment.bytes
                    state.segments[index] = nil
                }
            }
            return deletable
        }
        for index in deletable { unlink(Self.path(directory, index)) }
    }

    /// At a clean stop: when every record is in the database, the spool's files go too, so the
    /// next start has nothing to replay. Otherwise they stay, to be replayed then.
    func closeIfDrained() -> Bool {
        let removed = writer.withLock { state -> [Int]? in
            guard state.segments.values.allSatisfy({ $0.held == 0 }) else { return nil }
            if state.fd >= 0 { close(state.fd) }
            for fd in state.closedUnsynced { close(fd) }
            state.closedUnsynced = []
            state.fd = -1
            let indexes = Array(state.segments.keys)
            state.segments = [:]
            state.totalBytes = 0
            return indexes
        }
        guard let removed else { return false }
        for index in removed { unlink(Self.path(directory, index)) }
        return true
    }

    // MARK: State

    /// Bytes in segment files, records not yet in the database, and the oldest one's receive time.
    public struct Snapshot: Sendable {
        public var bytes: Int
        public var records: Int
        public var unread: Int
        public var oldestMicros: Int64?
        public var corruptSegments: Int
        public var truncatedBytes: Int
        public var recoveredRecords: Int
        public var writeFailures: Int
        public var segments: Int
    }

    public var snapshot: Snapshot {
        writer.withLock { state in
            let held = state.segments.filter { $0.value.held > 0 }
            return Snapshot(
                bytes: state.totalBytes,
                records: held.values.reduce(0) { $0 + $1.held },
                unread: state.unread,
                oldestMicros: held.min { $0.key < $1.key }?.value.oldestMicros,
                corruptSegments: state.corruptSegments,
                truncatedBytes: state.truncatedBytes,
                recoveredRecords: state.recoveredRecords,
                writeFailures: state.writeFailures,
                segments: state.segments.count
            )
        }
    }

    var unread: Int { writer.withLock { $0.unread } }
    /// At the size limit, not counting the segment being written once every record in it is
    /// released: a single append can be larger than the limit (a failed batch's copy), and that
    /// segment is only deleted at the next rotation, which needs an append, which a full spool
    /// would never let connectors make.
    var isFull: Bool {
        writer.withLock { state in
            let idle = state.segments[state.index].map { $0.held == 0 ? $0.bytes : 0 } ?? 0
            return state.totalBytes - idle >= maxBytes
        }
    }
    func countWriteFailure() { writer.withLock { $0.writeFailures += 1 } }

    // MARK: Recovery

    /// Checks every segment an earlier run left: counts its records (all to be replayed), cuts a
    /// segment at its first damaged record (a copy of a damaged one goes to `corrupt/` first), and
    /// moves aside files that are not segments at all. Never throws for damage, so a start after
    /// any crash gets to ready.
    static func recover(directory: String, into state: inout WriterState, logger: Logger) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".seg") }
        // Segment numbers this spool can have written (a stray `9223372036854775807.seg` must not
        // make the next number overflow).
        let indexes = names.compactMap { Int($0.dropLast(4)) }.filter { (0..<(1 << 48)).contains($0) }.sorted()
        let last = indexes.last
        for index in indexes {
            let path = Self.path(directory, index)
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            var records = 0
            var oldest: Int64?
            var good = 0
            var damage: String?
            data.withUnsafeBytes { buffer in
                guard buffer.count >= magic.count, Array(buffer[..<magic.count]) == magic else {
                    damage = "not a spool segment"
                    return
                }
                good = magic.count
                while good < buffer.count {
                    switch parseRecord(buffer, at: good) {
                    case .record(let payload, let next):
                        guard let header = SpoolRecord.header(payload) else {
                            damage = "unknown record"
                            return
                        }
                        if oldest == nil { oldest = header.receivedAtMicros }
                        records += 1
                        good = next
                    case .incomplete:
                        damage = "torn tail"
                        return
                    case .damaged(let reason):
                        damage = reason
                        return
                    }
                }
            }
            if let damage {
                let lost = data.count - good
                if damage != "torn tail" || index != last {
                    state.corruptSegments += 1
                    let aside = (directory as NSString).appendingPathComponent("corrupt")
                    try? FileManager.default.createDirectory(atPath: aside, withIntermediateDirectories: true)
                    let copy = (aside as NSString).appendingPathComponent(
                        "\((path as NSString).lastPathComponent).\(Int(Date().timeIntervalSince1970))"
                    )
                    try? FileManager.default.copyItem(atPath: path, toPath: copy)
                    logger.error(
                        "spool segment damaged; kept its good records, a copy is in corrupt/",
                        metadata: ["segment": "\(path)", "reason": "\(damage)", "records_kept": "\(records)", "bytes_cut": "\(lost)"]
                    )
                } else {
                    logger.warning(
                        "spool segment ends in a torn write (a crash mid-append); cut it there",
                        metadata: ["segment": "\(path)", "bytes_cut": "\(lost)"]
                    )
                }
                state.truncatedBytes += lost
                if good < magic.count {
                    unlink(path)
                    continue
                }
                guard truncate(path, off_t(good)) == 0 else {
                    throw SpoolError("cannot truncate damaged spool segment \(path): \(String(cString: strerror(errno)))")
                }
            }
            guard records > 0 else {
                unlink(path)
                continue
            }
            state.segments[index] = Segment(bytes: good, held: records, oldestMicros: oldest)
            state.totalBytes += good
            state.unread += records
            state.recoveredRecords += records
        }
    }
}

struct SpoolPosition: Sendable, Equatable {
    var segment: Int
    var offset: Int
}

/// The spool directory cannot be written or read.
public struct SpoolError: Error, CustomStringConvertible {
    public var description: String

    init(_ description: String) { self.description = description }
}

/// Runs the spool's fsync loop for the server's lifetime; a last fsync at shutdown. Started
/// before the batch writer, so it stops after it.
public struct SpoolSyncService: Service {
    let spool: Spool?

    public init(spool: Spool?) { self.spool = spool }

    public func run() async throws {
        guard let spool else {
            try? await gracefulShutdown()
            return
        }
        await withGracefulShutdownHandler {
            await spool.runSync()
        } onGracefulShutdown: {
            spool.stopSync()
        }
    }
}
