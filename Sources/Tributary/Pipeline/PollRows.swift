import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// REST poll results on their way to `api_connector_data`. Each row is copied to the poll-row
/// spool (`<data dir>/spool/polls/`) before the connector polls again, written in order by this
/// service, and released once stored, so a database outage or a crash loses none: rows an earlier
/// run left are written at start. A row the database refuses for good is counted
/// (`messages_failed`) and let go. Without a spool (`SPOOL_MODE=off`) rows wait in memory, at most
/// `capacity`, beyond which they are refused and counted as dropped.
public final class PollRows: Service, Sendable {
    struct Entry: Sendable {
        let row: APIDataRow
        /// The spool segment holding its copy.
        let segment: Int?
    }

    let spool: Spool?
    let store: any MessageSink
    let metrics: PipelineMetrics
    let logger: Logger
    let queue: SignalledQueue<Entry>
    /// Writes wait until it has brought the schema up to date; nil when the caller migrated.
    let migrator: DatabaseMigrator?

    public init(
        spool: Spool?,
        store: any MessageSink,
        metrics: PipelineMetrics,
        capacity: Int = 10_000,
        migrator: DatabaseMigrator? = nil,
        logger: Logger
    ) {
        self.migrator = migrator
        self.spool = spool
        self.store = store
        self.metrics = metrics
        self.logger = logger
        self.queue = SignalledQueue(capacity: capacity, overflow: .refuseNew)
    }

    /// Keeps `row` (on disk first, when there is a spool) for the writer; false when it was refused.
    @discardableResult
    public func append(_ row: APIDataRow) -> Bool {
        var segment: Int?
        // A full spool (SPOOL_MAX_BYTES) takes no more: the row waits in memory only.
        if let spool, !spool.isFull {
            do {
                segment = try spool.append(count: 1, oldestMicros: Timestamp.microseconds(row.timestamp), heldInMemory: true) { record in
                    record(row.timestamp) { SpoolRecord.encode(row, into: &$0) }
                }
            } catch {
                spool.countWriteFailure()
            }
        }
        guard queue.append(contentsOf: [Entry(row: row, segment: segment)]) == 0 else {
            metrics.counters(for: row.connectorID).dropped.add(1, ordering: .relaxed)
            if let segment { spool?.release([segment: 1]) }
            return false
        }
        return true
    }

    /// Rows waiting to be written (in memory, and left by an earlier run).
    public var depth: Int { queue.count + (spool?.unread ?? 0) }

    public func run() async throws {
        await withGracefulShutdownHandler {
            // Not before the tables exist: a write to a missing table would count as refused for good.
            if let migrator, !(await migrator.waitUntilDone()) { return }
            // What an earlier run left first, then what comes.
            if let spool {
                while spool.unread > 0, !Task.isShuttingDownGracefully {
                    let records = spool.read(limit: 100) { payload throws(SpoolCorruption) in try SpoolRecord.decodePollRow(payload) }
                    if records.isEmpty { break }
                    for record in records {
                        guard await write(record.record) else { return }
                        spool.release([record.segment: 1])
                    }
                }
            }
            while true {
                let entries = await queue.take(upTo: 100)
                if entries.isEmpty { break }
                for entry in entries {
                    guard await write(entry.row) else { return }
                    if let segment = entry.segment { spool?.release([segment: 1]) }
                }
            }
        } onGracefulShutdown: {
            self.queue.close()
        }
        if let spool, !spool.closeIfDrained() {
            await spool.sync()
            logger.notice("poll rows the database did not take are kept in the spool for the next start", metadata: ["spool": "\(spool.directory)"])
        }
    }

    /// Writes one row, retrying while the database is unavailable; false when shutting down
    /// first (the row stays in the spool).
    func write(_ row: APIDataRow) async -> Bool {
        var delay = Duration.milliseconds(100)
        while true {
            do {
                _ = try await store.insertAPIData(row)
                return true
            } catch let error as StoreError where error.isPermanent {
                metrics.counters(for: row.connectorID).failed.add(1, ordering: .relaxed)
                logger.error("the database refused a poll result; skipped", metadata: ["connector_id": "\(row.connectorID)", "error": "\(error)"])
                return true
            } catch {
                if Task.isShuttingDownGracefully { return false }
                logger.warning(
                    "could not store a poll result; retrying",
                    metadata: ["connector_id": "\(row.connectorID)", "error_type": "\(type(of: error))", "error": "\(error)"]
                )
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }
}
