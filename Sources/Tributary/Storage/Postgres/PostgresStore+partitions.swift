import Foundation
import PostgresNIO

/// With `MESSAGE_PARTITIONS=daily`, `websocket_messages` on PostgreSQL is partitioned by
/// `timestamp`, one partition a UTC day (`partitionMessagesByDay`): `websocket_messages_pYYYYMMDD`
/// for [day, next day), the table from before as `websocket_messages_before_YYYYMMDD` for
/// everything before that midnight, and `websocket_messages_default` for rows of days that have
/// no partition.
///
/// Each day's partition is created ahead (`preparePartitions`: at every start, after the
/// migrations, and every hour), standalone with a check of its range and its two unique indexes,
/// then attached: attaching takes a `SHARE UPDATE EXCLUSIVE` lock on the table, which inserts and
/// reads do not wait for. Retention detaches and drops whole days (`dropPartitions`).
extension PostgresStore {
    /// Days created ahead of today. A start after a longer stop creates today's first.
    static let partitionDaysAhead = 3
    /// What a partition's attach or detach may wait for a lock before it gives up until the next
    /// run: while it waits, writes to the table queue behind it.
    static let partitionLockTimeout = "2s"
    /// What making or dropping partitions may take in all (several days, each its lock wait).
    static let partitionWorkTimeout: Duration = .seconds(120)
    /// How long counting a partition's rows before its drop may take (`rowCount`); a task-local
    /// so a test can shorten it.
    @TaskLocal static var partitionCountTimeout: Duration = .seconds(10)

    /// One day's partition: its name and range.
    struct DayPartition {
        /// Midnight UTC at the start of the day.
        let day: Date
        var end: Date { day.addingTimeInterval(86_400) }
        var name: String { "websocket_messages_p" + Self.dayFormat(day) }

        /// The day's partition that `name` is, if it is one.
        init?(name: String) {
            let prefix = "websocket_messages_p"
            guard name.hasPrefix(prefix), let day = Self.day(String(name.dropFirst(prefix.count))) else { return nil }
            self.day = day
        }

        /// The day's partition of `date`.
        init(containing date: Date) {
            let seconds = date.timeIntervalSince1970
            day = Date(timeIntervalSince1970: (seconds / 86_400).rounded(.down) * 86_400)
        }

        /// `YYYYMMDD` of a day.
        static func dayFormat(_ day: Date) -> String {
            String(Timestamp.format(day).prefix(10).filter { $0 != "-" })
        }

        /// Midnight UTC of `YYYYMMDD`, nil for anything else.
        static func day(_ text: String) -> Date? {
            guard text.utf8.count == 8, text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
            let iso = "\(text.prefix(4))-\(text.dropFirst(4).prefix(2))-\(text.suffix(2))T00:00:00.000000Z"
            guard let date = Timestamp.parse(iso), dayFormat(date) == text else { return nil }
            return date
        }
    }

    /// `MESSAGE_PARTITIONS=daily`: makes `websocket_messages` a table partitioned by `timestamp`
    /// unless it is one already. The existing table, rows and indexes as they are, becomes the
    /// partition of everything before the next midnight (or the one after its newest row): a
    /// check of its rows against that bound (one scan, under an exclusive lock) and renames, no
    /// copy. An empty table (a new database) is dropped instead, and today's partition made at once.
    /// A `DEFAULT` partition takes rows of days with no partition (dropped, or not made yet).
    /// `(connector_id, source_id)` and `id` are unique within each partition: PostgreSQL enforces
    /// no unique index across partitions that lacks the partition key (see `insertMessages` for
    /// identity across days). There is no way back but a dump and restore.
    func partitionMessagesByDay() async throws {
        try await run("partition websocket_messages by day", timeout: Migrations.timeout) { [logger, self] client in
            try await client.withTransaction(logger: logger) { connection in
                _ = try await connection.query("SELECT pg_advisory_xact_lock(\(Self.migrationLockKey))", logger: logger)
                for try await relkind in try await connection.query(Self.tableKind, logger: logger).decode(String.self) where relkind == "p" {
                    return
                }
                logger.info("partitioning websocket_messages by day (MESSAGE_PARTITIONS=daily): checking its rows against the bound")
                try await connection.query(PostgresQuery(unsafeSQL: Self.partitionByDay), logger: logger)
                // Unless the table from before covers today (it was empty and dropped, or its rows
                // end before today), today's partition is made in the same transaction, so that no
                // write meanwhile puts today's rows in the default one.
                let today = DayPartition(containing: Date())
                if Self.migratedUntil(try await self.messagePartitions(on: connection)).map({ today.day >= $0 }) ?? true {
                    for statement in Self.partitionStatements(today) {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                }
                logger.info("websocket_messages is partitioned by day")
            }
        }
    }

    static let partitionByDay = """
        DO $tributary$
        DECLARE
            cutover timestamptz := date_trunc('day', now(), 'UTC') + interval '1 day';
            newest timestamptz;
            legacy text;
            suffix text;
        BEGIN
            -- Taken now, not by the rename below: an empty table is dropped, so no row may come in meanwhile.
            LOCK TABLE websocket_messages IN ACCESS EXCLUSIVE MODE;
            SELECT max("timestamp") INTO newest FROM websocket_messages;
            IF newest IS NULL THEN
                cutover := date_trunc('day', now(), 'UTC');
            ELSIF newest >= cutover THEN
                cutover := date_trunc('day', newest, 'UTC') + interval '1 day';
            END IF;
            legacy := 'websocket_messages_before_' || to_char(cutover AT TIME ZONE 'UTC', 'YYYYMMDD');
            EXECUTE format('ALTER TABLE websocket_messages RENAME TO %I', legacy);
            FOREACH suffix IN ARRAY ARRAY['time_exchange', 'instrument_time', 'exchange_instrument_time', 'connector_time', 'source'] LOOP
                EXECUTE format('ALTER INDEX %I RENAME TO %I', 'idx_websocket_messages_' || suffix, legacy || '_' || suffix);
            END LOOP;
            EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT websocket_messages_pkey TO %I', legacy, legacy || '_pkey');
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK ("timestamp" < %L)', legacy, legacy || '_range', cutover);
            EXECUTE format('CREATE TABLE websocket_messages (LIKE %I INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp")', legacy);
            ALTER SEQUENCE websocket_messages_id_seq OWNED BY websocket_messages.id;
            CREATE INDEX idx_websocket_messages_time_exchange ON websocket_messages (timestamp DESC, exchange);
            CREATE INDEX idx_websocket_messages_instrument_time ON websocket_messages (instrument, timestamp DESC);
            CREATE INDEX idx_websocket_messages_exchange_instrument_time ON websocket_messages (exchange, instrument, timestamp DESC);
            CREATE INDEX idx_websocket_messages_connector_time ON websocket_messages (connector_id, timestamp DESC);
            IF newest IS NULL THEN
                -- Nothing to keep: every day, past ones too, can have a partition of its own.
                EXECUTE format('DROP TABLE %I', legacy);
            ELSE
                EXECUTE format('ALTER TABLE websocket_messages ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)', legacy, cutover);
            END IF;
            CREATE TABLE websocket_messages_default (LIKE websocket_messages INCLUDING DEFAULTS);
            ALTER TABLE websocket_messages_default ADD CONSTRAINT websocket_messages_default_pkey PRIMARY KEY (id);
            CREATE UNIQUE INDEX websocket_messages_default_source ON websocket_messages_default (connector_id, source_id);
            ALTER TABLE websocket_messages ATTACH PARTITION websocket_messages_default DEFAULT;
        END
        $tributary$
        """

    /// `websocket_messages`'s kind: `p` when partitioned, `r` when one table.
    static let tableKind: PostgresQuery = "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('websocket_messages')"

    /// True when `websocket_messages` is a partitioned table (whoever made it one).
    func isPartitioned() async throws -> Bool {
        try await run("table kind") { [logger] client in
            for try await relkind in try await client.query(Self.tableKind, logger: logger).decode(String.self) { return relkind == "p" }
            return false
        }
    }

    /// The partitions of `websocket_messages` by name; empty when it is not partitioned.
    func messagePartitions(on connection: PostgresConnection) async throws -> [String] {
        let rows = try await connection.query(
            """
            SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass('websocket_messages')
            """,
            logger: logger
        )
        var names: [String] = []
        for try await name in rows.decode(String.self) { names.append(name) }
        return names
    }

    /// The end of the partition of everything before the migration (`..._before_YYYYMMDD`).
    static func migratedUntil(_ partitions: [String]) -> Date? {
        let prefix = "websocket_messages_before_"
        return partitions.lazy.filter { $0.hasPrefix(prefix) }.compactMap { DayPartition.day(String($0.dropFirst(prefix.count))) }.max()
    }

    /// Creates the partitions of the days from `now`'s to `partitionDaysAhead` later that do not
    /// exist yet (nor lie before the migrated table's end). Returns the names created. A day
    /// that cannot be attached (the default partition already holds rows of it, or a lock
    /// timeout) is logged and left to the default partition; the others go on.
    @discardableResult
    public func preparePartitions(now: Date) async throws -> [String] {
        try await preparePartitions(since: now, now: now)
    }

    /// The most past days `preparePartitions(since:now:)` makes by default.
    public static let partitionDaysBack = 400

    /// The same from `since`'s day on (at most `daysBack`, and never more than
    /// `partitionDaysBack`, days before `now`'s), for rows of past days loaded on purpose
    /// (`bench query`); a running server makes today's and later ones only, and rows of other
    /// days go to the default partition.
    @discardableResult
    public func preparePartitions(since: Date, now: Date, daysBack: Int = partitionDaysBack) async throws -> [String] {
        try await run("prepare partitions", timeout: Self.partitionWorkTimeout) { [logger, self] client in
            try await client.withConnection { connection in
                let existing = try await self.messagePartitions(on: connection)
                guard !existing.isEmpty else { return [] }
                let today = DayPartition(containing: now).day
                let back = min(max(0, daysBack), Self.partitionDaysBack)
                let first = since.timeIntervalSince1970.isFinite ? min(since, now) : now
                let from = max(
                    DayPartition(containing: first).day,
                    today.addingTimeInterval(-Double(back) * 86_400),
                    Self.migratedUntil(existing) ?? .distantPast
                )
                // Whole days from `from` to today: 0 to `back` (none when `from` is later).
                let past = min(max((today.timeIntervalSince(from) / 86_400).rounded(), 0), Double(back))
                let days = Int(past) + Self.partitionDaysAhead
                var created: [String] = []
                for offset in 0...days {
                    // An hour into each day: clear of its edges.
                    let partition = DayPartition(containing: from.addingTimeInterval(Double(offset) * 86_400 + 3_600))
                    guard !existing.contains(partition.name) else { continue }
                    do {
                        if try await Self.createPartition(partition, on: connection, logger: logger) { created.append(partition.name) }
                    } catch {
                        logger.warning(
                            "could not create a day's partition of websocket_messages; its rows go to websocket_messages_default",
                            metadata: ["partition": "\(partition.name)", "error": "\(Self.translate(error))"]
                        )
                    }
                }
                if !created.isEmpty { logger.info("created partitions of websocket_messages", metadata: ["partitions": "\(created)"]) }
                return created
            }
        }
    }

    /// The table is built apart, with a check of its range (so attaching need not scan it) and
    /// the unique indexes a partition carries itself, then attached; under the migration lock, so
    /// that instances starting together do not race for the same day. False when another made it first.
    static func createPartition(_ partition: DayPartition, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        try await connection.withTransaction(logger: logger) { connection in
            _ = try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLockKey))", logger: logger)
            let found = try await connection.query("SELECT to_regclass(\(partition.name)) IS NOT NULL", logger: logger)
            for try await exists in found.decode(Bool.self) where exists { return false }
            for statement in partitionStatements(partition) {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            return true
        }
    }

    /// A day's partition, made and attached, inside a transaction.
    static func partitionStatements(_ partition: DayPartition) -> [String] {
        let name = partition.name
        // Names and times of our own making (a day's digits), not input: safe in the text.
        let from = Timestamp.format(partition.day)
        let to = Timestamp.format(partition.end)
        return [
            "SET LOCAL lock_timeout = '\(partitionLockTimeout)'",
            """
            CREATE TABLE \(name) (LIKE websocket_messages INCLUDING DEFAULTS,
                CONSTRAINT \(name)_range CHECK ("timestamp" >= '\(from)' AND "timestamp" < '\(to)'))
            """,
            "ALTER TABLE \(name) ADD CONSTRAINT \(name)_pkey PRIMARY KEY (id)",
            "CREATE UNIQUE INDEX \(name)_source ON \(name) (connector_id, source_id)",
            "ALTER TABLE websocket_messages ATTACH PARTITION \(name) FOR VALUES FROM ('\(from)') TO ('\(to)')",
        ]
    }

    /// Detaches and drops every partition whose whole range is before `cutoff`: the days, and the
    /// migrated table once its end is. The default partition stays (its old rows go in bounded
    /// deletes like the other tables'). Returns what it dropped, with the rows each held (see
    /// `rowCount`).
    public func dropPartitions(before cutoff: Date) async throws -> [DroppedPartition] {
        try await run("drop partitions", timeout: Self.partitionWorkTimeout) { [logger, self] client in
            try await client.withConnection { connection in
                let existing = try await self.messagePartitions(on: connection)
                var dropped: [DroppedPartition] = []
                for name in existing.sorted() {
                    let end: Date?
                    if let partition = DayPartition(name: name) {
                        end = partition.end
                    } else {
                        end = Self.migratedUntil([name])
                    }
                    guard let end, end <= cutoff else { continue }
                    let (rows, estimated) = await self.rowCount(of: name, on: connection)
                    try await connection.withTransaction(logger: logger) { connection in
                        for statement in [
                            "SET LOCAL lock_timeout = '\(Self.partitionLockTimeout)'",
                            "ALTER TABLE websocket_messages DETACH PARTITION \(name)",
                            "DROP TABLE \(name)",
                        ] {
                            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                        }
                    }
                    dropped.append(DroppedPartition(name: name, rows: rows, estimated: estimated))
                }
                return dropped
            }
        }
    }

    /// The rows of partition `name`, just before its drop (a day long past, which nothing but a
    /// spool replay of rows received that long ago still writes to): counted, unless counting
    /// takes longer than `partitionCountTimeout` (a day of a high-rate stream, a large taken-over
    /// table), and then as PostgreSQL's statistics estimate them (`pg_class.reltuples`, 0 when it
    /// was never analyzed), so the drop itself never waits on a count.
    private func rowCount(of name: String, on connection: PostgresConnection) async -> (rows: Int, estimated: Bool) {
        do {
            let rows = try await connection.withTransaction(logger: logger) { connection in
                let limit = "SET LOCAL statement_timeout = '\(Self.partitionCountTimeout.inMilliseconds)ms'"
                try await connection.query(PostgresQuery(unsafeSQL: limit), logger: logger)
                var rows = 0
                let counted = try await connection.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(name)"), logger: logger)
                for try await count in counted.decode(Int64.self) { rows = Int(count) }
                return rows
            }
            return (rows, false)
        } catch {
            // Cancelled (a shutdown): the drop that follows fails too; nothing to estimate or warn of.
            guard !Task.isCancelled else { return (0, true) }
            var rows = 0
            do {
                let estimate = try await connection.query("SELECT reltuples::int8 FROM pg_class WHERE oid = to_regclass(\(name))", logger: logger)
                for try await value in estimate.decode(Int64.self) { rows = Int(max(0, value)) }
            } catch {
                logger.warning("retention: no row count or estimate for \(name)", metadata: ["error": "\(error)"])
            }
            return (rows, true)
        }
    }
}
