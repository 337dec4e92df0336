import Foundation
import Logging
import NIOCore
import PostgresNIO
import Tributary
import TributarySimulator

/// The database's own limit for the rows an ingest run wrote (PostgreSQL): dump exactly those
/// rows (every column but `id`) to a file in COPY's text format, empty `websocket_messages`
/// (its indexes stay), and time one `COPY ... FROM STDIN` of the file back in. No client work is
/// timed: the file is read before the clock starts, and only bytes go over the socket.
/// The table ends up holding the same rows again (with new ids).
struct ReplayCopy {
    let store: PostgresStore
    let logger: Logger

    static let columns = [
        "connector_id", "exchange", "instrument", "message_type", "price", "quantity", "side", "data", "source_id", "session_id",
        "exchange_timestamp", "timestamp",
    ]

    /// Rows in `websocket_messages` (the replay is only the yardstick when the table was empty before the run).
    func rowCount() async throws -> Int64 {
        try await store.run("count rows") { [logger] client in
            for try await count in try await client.query("SELECT count(*) FROM websocket_messages", logger: logger).decode(Int64.self) {
                return count
            }
            return 0
        }
    }

    /// A `CHECKPOINT`, before the latency run: the WAL segments written so far become recyclable,
    /// so the run writes into recycled segments as a server that has been running does, instead
    /// of creating each new 16 MB segment and filling it with zeros first (a 40–75 ms stall of
    /// every commit every few seconds on a fresh cluster, `wal_init_zero`).
    func checkpoint() async throws {
        try await store.run("checkpoint") { [logger] client in _ = try await client.query("CHECKPOINT", logger: logger) }
    }

    /// Dumps the table to `path`, empties it and copies the file back in: the rows, the seconds of
    /// the COPY and the CPU seconds PostgreSQL's processes spent meanwhile.
    func run(dumpingTo path: String) async throws -> (rows: Int, seconds: Double, postgresCPU: Double) {
        let selected = Self.columns.map { $0 == "data" ? "data::text" : "\($0)::text" }.joined(separator: ", ")
        let (dump, rows) = try await store.run("dump rows") { [logger] client in
            var dump = ByteBuffer()
            var rows = 0
            let result = try await client.query(PostgresQuery(unsafeSQL: "SELECT \(selected) FROM websocket_messages ORDER BY id"), logger: logger)
            for try await row in result {
                var first = true
                for cell in row {
                    if !first { dump.writeInteger(UInt8(ascii: "\t")) }
                    first = false
                    Self.writeCopyText(try cell.decode(String?.self), to: &dump)
                }
                dump.writeInteger(UInt8(ascii: "\n"))
                rows += 1
            }
            return (dump, rows)
        }
        try Data(dump.readableBytesView).write(to: URL(fileURLWithPath: path))
        let file = ByteBuffer(bytes: try Data(contentsOf: URL(fileURLWithPath: path)))
        return try await store.run("replay copy") { [logger] client in
            try await client.withConnection { connection in
                _ = try await connection.query("TRUNCATE websocket_messages", logger: logger)
                _ = try await connection.query("CHECKPOINT", logger: logger)
                let started = ContinuousClock.now
                let cpuBefore = ClusterBenchmark.CPUTime.postgres()
                try await connection.copyFrom(table: "websocket_messages", columns: Self.columns, logger: logger) { writer in
                    var remaining = file
                    while let chunk = remaining.readSlice(length: min(remaining.readableBytes, 1 << 18)), chunk.readableBytes > 0 {
                        try await writer.write(chunk)
                    }
                }
                let seconds = (ContinuousClock.now - started).inSeconds
                return (rows, seconds, ClusterBenchmark.CPUTime.postgres() - cpuBefore)
            }
        }
    }

    /// `value` as a field of COPY's text format: `\N` for NULL; backslash, tab, newline and
    /// carriage return escaped.
    static func writeCopyText(_ value: String?, to buffer: inout ByteBuffer) {
        guard let value else {
            buffer.writeStaticString("\\N")
            return
        }
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
            case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
            case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
            default: buffer.writeInteger(byte)
            }
        }
    }
}
