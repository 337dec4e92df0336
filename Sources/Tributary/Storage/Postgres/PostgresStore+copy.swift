import Foundation
import NIOCore
import PostgresNIO
import Synchronization

/// Ids taken from `websocket_messages_id_seq` ahead of time, so a batch written with `COPY`
/// (which returns nothing) knows its rows' ids. Unused ids are gaps, as after a rollback.
final class ReservedIDs: Sendable {
    private let ids = Mutex<(values: [Int64], next: Int)>(([], 0))
    /// Ids fetched at once (one round trip each time the reserve runs out).
    static let block = 8_192

    /// `count` ids, fetching more from the sequence on `connection` when the reserve is short.
    func take(_ count: Int, on connection: PostgresConnection, logger: Logger) async throws -> [Int64] {
        try await take(count) { fetch in try await Self.fetch(fetch, on: connection, logger: logger) }
    }

    /// `count` ids, fetching more from the sequence on a connection of `client` only when the reserve is short.
    func take(_ count: Int, from client: PostgresClient, logger: Logger) async throws -> [Int64] {
        try await take(count) { fetch in try await client.withConnection { try await Self.fetch(fetch, on: $0, logger: logger) } }
    }

    private func take(_ count: Int, fetching: (Int) async throws -> [Int64]) async throws -> [Int64] {
        if let taken = takeReserved(count) { return taken }
        let fetch = max(count, Self.block)
        let fetched = try await fetching(fetch)
        guard fetched.count >= count else { throw StoreError.corrupt("the id sequence returned \(fetched.count) of \(fetch) ids") }
        return ids.withLock { reserve in
            // What is left over joins the reserve (another writer may have refilled it meanwhile).
            let taken = Array(fetched.prefix(count))
            reserve.values = Array(reserve.values[reserve.next...]) + fetched.dropFirst(count)
            reserve.next = 0
            return taken
        }
    }

    private static func fetch(_ count: Int, on connection: PostgresConnection, logger: Logger) async throws -> [Int64] {
        let rows = try await connection.query(
            "SELECT array_agg(nextval('websocket_messages_id_seq')) FROM generate_series(1, \(count))",
            logger: logger
        )
        var fetched: [Int64] = []
        for try await values in rows.decode([Int64].self) { fetched = values }
        return fetched
    }

    /// Forgets the reserve (after a conflict: the sequence may have been reset under it).
    func clear() { ids.withLock { $0 = ([], 0) } }

    private func takeReserved(_ count: Int) -> [Int64]? {
        ids.withLock { reserve in
            guard reserve.values.count - reserve.next >= count else { return nil }
            defer { reserve.next += count }
            return Array(reserve.values[reserve.next..<(reserve.next + count)])
        }
    }
}

/// Connectors whose rows recently met a row already stored (a unique violation in a `COPY`):
/// their batches are written with `INSERT ... ON CONFLICT DO NOTHING` for a while.
final class ConflictMemory: Sendable {
    private let until = Mutex<[String: ContinuousClock.Instant]>([:])
    /// How long a connector keeps to `INSERT` after a conflict.
    static let hold = Duration.seconds(60)

    func recentlyConflicted(_ connectors: some Sequence<String>) -> Bool {
        let now = ContinuousClock.now
        return until.withLock { until in
            until = until.filter { $0.value > now }
            return connectors.contains { until[$0] != nil }
        }
    }

    func conflicted(_ connectors: some Sequence<String>) {
        let end = ContinuousClock.now + Self.hold
        until.withLock { until in for id in connectors { until[id] = end } }
    }
}

/// The rows of a batch in `COPY`'s text format, in `columns` order (`id` last, added once the
/// ids are reserved).
struct CopyRows: Sendable {
    static let columns = [
        "connector_id", "exchange", "instrument", "message_type", "price", "quantity", "side", "data", "source_id", "session_id",
        "exchange_timestamp", "timestamp", "id",
    ]

    /// Every row's fields but the id, each ending in a tab; `ends[i]` is where row i ends.
    let body: ByteBuffer
    let ends: [Int]

    init(_ messages: [PendingMessage]) {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(messages.count * 400)
        var ends: [Int] = []
        ends.reserveCapacity(messages.count)
        for pending in messages {
            let message = pending.message
            Self.field(pending.connectorID, &buffer)
            Self.tab(&buffer)
            Self.field(message.exchange.rawValue, &buffer)
            Self.tab(&buffer)
            Self.field(Self.nonEmpty(message.instrument), &buffer)
            Self.tab(&buffer)
            Self.field(message.messageType.rawValue, &buffer)
            Self.tab(&buffer)
            Self.field(Self.nonEmpty(message.price), &buffer)
            Self.tab(&buffer)
            Self.field(Self.nonEmpty(message.quantity), &buffer)
            Self.tab(&buffer)
            Self.field(Self.nonEmpty(message.side), &buffer)
            Self.tab(&buffer)
            Self.field(pending.data, &buffer)
            Self.tab(&buffer)
            Self.field(pending.sourceID, &buffer)
            Self.tab(&buffer)
            Self.field(pending.sessionID, &buffer)
            Self.tab(&buffer)
            // As the INSERT path stores them: a time before 1970 from an exchange is left out.
            if let ms = message.exchangeTimestampMs, ms >= 0, Timestamp.isValid(milliseconds: ms) {
                Self.timestamp(microseconds: ms * 1000, &buffer)
            } else {
                buffer.writeStaticString("\\N")
            }
            Self.tab(&buffer)
            Self.timestamp(microseconds: Timestamp.microseconds(pending.receivedAt), &buffer)
            Self.tab(&buffer)
            ends.append(buffer.writerIndex)
        }
        body = buffer
        self.ends = ends
    }

    /// The whole text, with `ids[i]` as row i's last field.
    func with(ids: [Int64]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(body.readableBytes + ids.count * 12)
        var start = body.readerIndex
        for (end, id) in zip(ends, ids) {
            if let row = body.getSlice(at: start, length: end - start) { buffer.writeImmutableBuffer(row) }
            buffer.writeString(String(id))
            buffer.writeInteger(UInt8(ascii: "\n"))
            start = end
        }
        return buffer
    }

    static func nonEmpty(_ value: String?) -> String? { value?.isEmpty == false ? value : nil }

    static func tab(_ buffer: inout ByteBuffer) { buffer.writeInteger(UInt8(ascii: "\t")) }

    /// `\N` for nil; backslash, tab, newline and carriage return escaped.
    static func field(_ value: String?, _ buffer: inout ByteBuffer) {
        guard var value else {
            buffer.writeStaticString("\\N")
            return
        }
        value.withUTF8 { bytes in
            var start = 0
            // Eight bytes at a time past runs with nothing to escape (most of a row's `data`).
            var index = 0
            while bytes.count - index >= 8 {
                guard !Self.mayNeedEscape(WordScan.word(bytes, at: index)) else { break }
                index += 8
            }
            for index in index..<bytes.count {
                let byte = bytes[index]
                let escaped: StaticString
                switch byte {
                case UInt8(ascii: "\\"): escaped = "\\\\"
                case UInt8(ascii: "\t"): escaped = "\\t"
                case UInt8(ascii: "\n"): escaped = "\\n"
                case UInt8(ascii: "\r"): escaped = "\\r"
                default: continue
                }
                buffer.writeBytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[start..<index])))
                buffer.writeStaticString(escaped)
                start = index + 1
            }
            buffer.writeBytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[start...])))
        }
    }

    /// Whether one of the eight bytes of `word` is a backslash or below 0x0E (as tab, newline and
    /// carriage return are).
    static func mayNeedEscape(_ word: UInt64) -> Bool {
        WordScan.has(word, byte: UInt8(ascii: "\\")) || WordScan.has(word, lessThan: 0x0E)
    }

    /// `YYYY-MM-DD HH:MM:SS.ffffff+00` for microseconds since 1970 (years 0001 to 9999, which
    /// `Timestamp.microseconds` and `Timestamp.isValid` guarantee).
    static func timestamp(microseconds: Int64, _ buffer: inout ByteBuffer) {
        let (days, inDay) = floorDivision(microseconds, 86_400_000_000)
        let (year, month, day) = civil(days: days)
        let seconds = inDay / 1_000_000
        // Its 29 bytes in place, after one capacity check (not one per digit).
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 29) { output in
            var index = 0
            func put(_ value: Int64, _ width: Int, then separator: UInt8) {
                var rest = value
                for offset in stride(from: width - 1, through: 0, by: -1) {
                    output[index + offset] = UInt8(ascii: "0") + UInt8(truncatingIfNeeded: rest % 10)
                    rest /= 10
                }
                output[index + width] = separator
                index += width + 1
            }
            put(year, 4, then: UInt8(ascii: "-"))
            put(month, 2, then: UInt8(ascii: "-"))
            put(day, 2, then: UInt8(ascii: " "))
            put(seconds / 3600, 2, then: UInt8(ascii: ":"))
            put(seconds / 60 % 60, 2, then: UInt8(ascii: ":"))
            put(seconds % 60, 2, then: UInt8(ascii: "."))
            put(inDay % 1_000_000, 6, then: UInt8(ascii: "+"))
            output[index] = UInt8(ascii: "0")
            output[index + 1] = UInt8(ascii: "0")
            return index + 2
        }
    }

    static func floorDivision(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        let quotient = value / divisor
        let remainder = value % divisor
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }

    /// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
    static func civil(days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
