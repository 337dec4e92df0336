import Foundation
import Logging
import Prometheus
import Synchronization
import Testing

@testable import Tributary

/// `MESSAGE_PARTITIONS=daily` on PostgreSQL: `websocket_messages` one partition a day, an
/// existing table taken over as it is, a trade stored once across days, retention by whole days.
@Suite(.timeLimit(.minutes(3))) struct PartitionTests {
    static let day: TimeInterval = 86_400
    /// Midnight UTC at the start of today.
    static var today: Date { Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / day).rounded(.down) * day) }

    static func trade(_ id: Int, exchangeTime: Date, receivedAt: Date, connector: String = "conn_p") -> PendingMessage {
        let message = HardeningTests.trade { message in
            message.sourceID = "okx:trades:BTC-USDT:\(id)"
            message.price = "\(100 + id)"
            message.exchangeTimestampMs = Int64(exchangeTime.timeIntervalSince1970 * 1000)
        }
        return PendingMessage(connectorID: connector, sessionID: "ws_1", sourceID: message.sourceID ?? "", message: message, receivedAt: receivedAt)
    }

    /// A partitioned configuration on a new PostgreSQL database, or nothing without PostgreSQL.
    static func withPartitionedConfig(_ body: (AppConfig) async throws -> Void) async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        try await TestBackend.postgres.withConfig { config in
            var config = config
            config.messagePartitions = .daily
            try await body(config)
        }
    }

    static func partitions(_ config: AppConfig) async throws -> [String] {
        try await RawDatabase.strings(
            config,
            """
            SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'websocket_messages'::regclass ORDER BY 1
            """
        ).compactMap { $0 }
    }

    static func name(_ day: Date) -> String { "websocket_messages_p" + PostgresStore.DayPartition.dayFormat(day) }

    @Test func anExistingTableBecomesDailyPartitionsWithItsRowsAndIndexes() async throws {
        try await Self.withPartitionedConfig { config in
            var plain = config
            plain.messagePartitions = .none
            let now = Date()
            let earlier = [1, 2, 3].map {
                Self.trade($0, exchangeTime: now.addingTimeInterval(-2 * Self.day), receivedAt: now.addingTimeInterval(-2 * Self.day))
            }
            try await Tributary.withStore(plain, logger: Logger(label: "test")) { store in
                try await store.migrate()
                _ = try await store.insertMessages(earlier, batch: BatchRecord(batchID: "b_before", connectorID: nil, metrics: [:]))
            }
            #expect(try await Self.partitions(config).isEmpty, "one table without the setting")

            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                try await store.migrate()
                let tomorrow = Self.today.addingTimeInterval(Self.day)
                let expected =
                    ["websocket_messages_before_" + PostgresStore.DayPartition.dayFormat(tomorrow), "websocket_messages_default"]
                    + (0...PostgresStore.partitionDaysAhead).map { Self.name(tomorrow.addingTimeInterval(Double($0) * Self.day)) }
                #expect(try await Self.partitions(config) == expected.sorted())
                // The rows from before are there and still one of each: written again, nothing is added.
                let again = try await store.insertMessages(earlier, batch: BatchRecord(batchID: "b_again", connectorID: nil, metrics: [:]))
                #expect(again == [nil, nil, nil])
                // New rows of another connector (this one's now write with INSERT for a while), a
                // small batch (one statement) and a large one (COPY), go in without a conflict.
                // Their exchange time past the day's first minute, which takes the INSERT path.
                let exchangeTime = max(now, Self.today.addingTimeInterval(120))
                let fresh = Self.trade(4, exchangeTime: exchangeTime, receivedAt: now, connector: "conn_q")
                #expect(try await store.insertMessages([fresh], batch: BatchRecord(batchID: "b_now", connectorID: nil, metrics: [:])).first != nil)
                let many = (10..<260).map { Self.trade($0, exchangeTime: exchangeTime, receivedAt: now, connector: "conn_q") }
                let ids = try await store.insertMessages(many, batch: BatchRecord(batchID: "b_many", connectorID: nil, metrics: [:]))
                #expect(ids.allSatisfy { $0 != nil })
                #expect((store as? PostgresStore)?.copyConflicts.load(ordering: .relaxed) == 1, "only the rows written again met a conflict")
            }
            #expect(try await RawDatabase.strings(config, "SELECT count(*)::text FROM websocket_messages") == ["254"])
            // The seed's query, unchanged.
            let seed = "SELECT * FROM websocket_messages WHERE data->>'instrument' = 'BTC-USDT' AND timestamp > NOW() - INTERVAL '1 hour'"
            #expect(try await RawDatabase.strings(config, seed).count == 251)
            // Every partition carries the identity index and the seed's indexes.
            let unique = try await RawDatabase.strings(
                config,
                """
                SELECT count(*)::text FROM pg_indexes WHERE tablename LIKE 'websocket_messages_%'
                AND indexdef LIKE 'CREATE UNIQUE INDEX % (connector_id, source_id)'
                """
            )
            #expect(unique == ["\(PostgresStore.partitionDaysAhead + 3)"])
            let parentIndexes = try await RawDatabase.strings(config, "SELECT indexname::text FROM pg_indexes WHERE tablename = 'websocket_messages'")
            #expect(Set(parentIndexes.compactMap { $0 }).count == 4)
        }
    }

    @Test func aNewDatabaseHasTodaysPartitionFromTheStart() async throws {
        try await Self.withPartitionedConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let now = Date()
                _ = try await store.insertMessages(
                    [Self.trade(1, exchangeTime: now, receivedAt: now)],
                    batch: BatchRecord(batchID: "b_1", connectorID: nil, metrics: [:])
                )
            }
            // The empty table from before is not kept: nothing but the default and the days.
            let expected =
                ["websocket_messages_default"]
                + (0...PostgresStore.partitionDaysAhead).map { Self.name(Self.today.addingTimeInterval(Double($0) * Self.day)) }
            #expect(try await Self.partitions(config) == expected.sorted())
            let home = try await RawDatabase.strings(config, "SELECT tableoid::regclass::text FROM websocket_messages")
            #expect(home == [Self.name(Self.today)])
        }
    }

    @Test func pastDaysGetTheirPartitionsWhenAskedFor() async throws {
        try await Self.withPartitionedConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let postgres = try #require(store as? PostgresStore)
                let twoDaysAgo = Self.today.addingTimeInterval(-2 * Self.day + 600)
                let threeDaysAgo = twoDaysAgo.addingTimeInterval(-Self.day)
                // No further back than asked (two days here).
                let created = try await postgres.preparePartitions(since: threeDaysAgo, now: Date(), daysBack: 2)
                #expect(created == [Self.name(twoDaysAgo), Self.name(twoDaysAgo.addingTimeInterval(Self.day))])
                _ = try await store.insertMessages(
                    [Self.trade(1, exchangeTime: twoDaysAgo, receivedAt: twoDaysAgo)],
                    batch: BatchRecord(batchID: "b_past", connectorID: nil, metrics: [:])
                )
                #expect(try await postgres.preparePartitions(since: threeDaysAgo, now: Date()) == [Self.name(threeDaysAgo)])
                // Extreme arguments make nothing more and do not trap.
                #expect(try await postgres.preparePartitions(since: threeDaysAgo, now: Date(), daysBack: .max).isEmpty)
                #expect(try await postgres.preparePartitions(since: Date(timeIntervalSince1970: .nan), now: Date(), daysBack: -5).isEmpty)
            }
            let home = try await RawDatabase.strings(config, "SELECT tableoid::regclass::text FROM websocket_messages")
            #expect(home == [Self.name(Self.today.addingTimeInterval(-2 * Self.day))])
        }
    }

    @Test func aTradeDeliveredAgainOnALaterDayIsStoredOnce() async throws {
        try await Self.withPartitionedConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                // Two days ahead, each with a partition of its own.
                let first = Self.today.addingTimeInterval(2 * Self.day + 23 * 3_600)
                let next = Self.today.addingTimeInterval(3 * Self.day + 600)
                let trade = Self.trade(1, exchangeTime: first, receivedAt: first)
                #expect(try await store.insertMessages([trade], batch: BatchRecord(batchID: "b_1", connectorID: nil, metrics: [:])).first != nil)
                let again = Self.trade(1, exchangeTime: first, receivedAt: next)
                let other = Self.trade(2, exchangeTime: next, receivedAt: next)
                for size in [1, 250] {
                    // Small and large batches alike (one statement, or COPY).
                    let filler = (0..<(size - 1)).map { Self.trade(1_000 * size + $0, exchangeTime: next, receivedAt: next) }
                    let ids = try await store.insertMessages(
                        [again] + filler,
                        batch: BatchRecord(batchID: "b_size_\(size)", connectorID: nil, metrics: [:])
                    )
                    #expect(ids.first == .some(nil), "the trade stored on the day before is not stored again")
                    #expect(ids.dropFirst().allSatisfy { $0 != nil })
                }
                #expect(try await store.insertMessages([other], batch: BatchRecord(batchID: "b_2", connectorID: nil, metrics: [:])).first != nil)
            }
            let copies = try await RawDatabase.strings(
                config,
                "SELECT tableoid::regclass::text FROM websocket_messages WHERE source_id = 'okx:trades:BTC-USDT:1'"
            )
            #expect(copies == [Self.name(Self.today.addingTimeInterval(2 * Self.day))])
        }
    }

    @Test func retentionDropsWholeDaysAndDeletesTheRest() async throws {
        try await Self.withPartitionedConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let dayTwo = Self.today.addingTimeInterval(2 * Self.day + 3_600)
                let dayThree = Self.today.addingTimeInterval(3 * Self.day + 3_600)
                let trades = [
                    Self.trade(1, exchangeTime: Date(), receivedAt: Date()),
                    Self.trade(2, exchangeTime: dayTwo, receivedAt: dayTwo),
                    Self.trade(3, exchangeTime: dayThree, receivedAt: dayThree),
                    Self.trade(4, exchangeTime: dayThree.addingTimeInterval(3_600), receivedAt: dayThree.addingTimeInterval(3_600)),
                ]
                _ = try await store.insertMessages(trades, batch: BatchRecord(batchID: "b_r", connectorID: nil, metrics: [:]))
                // A day later than day three's first row, 1 day kept: today and days one and two
                // go whole; day three's first row goes in a bounded delete.
                let metrics = PipelineMetrics()
                var retention = Retention(store: store, days: 1, metrics: metrics, logger: Logger(label: "test"))
                retention.pause = .milliseconds(1)
                let deleted = try await retention.prune(now: dayThree.addingTimeInterval(Self.day + 1_800))
                // Two rows in the dropped days, one in a bounded delete: all three are counted.
                #expect(deleted[.messages] == 3, "\(deleted)")
                let exposition = String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self)
                #expect(exposition.contains("tributary_retention_deleted_rows_total{table=\"websocket_messages\"} 3"), "\(exposition)")
                let left = try await Self.partitions(config)
                #expect(left.filter { $0 != "websocket_messages_default" }.first == Self.name(Self.today.addingTimeInterval(3 * Self.day)), "\(left)")
                #expect(left.contains("websocket_messages_default"))
                #expect(!left.contains { $0.hasPrefix("websocket_messages_before_") })
            }
            #expect(try await RawDatabase.strings(config, "SELECT source_id FROM websocket_messages") == ["okx:trades:BTC-USDT:4"])
        }
    }

    /// A dropped day's rows are counted; a count that runs past its bound (here held up by another
    /// session's lock on the day) gives way to PostgreSQL's estimate, and the day is still dropped.
    @Test func aDayThatTakesTooLongToCountIsDroppedWithItsEstimate() async throws {
        try await Self.withPartitionedConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let now = Date()
                let trades = (1...3).map { Self.trade($0, exchangeTime: now, receivedAt: now) }
                _ = try await store.insertMessages(trades, batch: BatchRecord(batchID: "b_e", connectorID: nil, metrics: [:]))
                let today = Self.name(Self.today)
                _ = try await RawDatabase.strings(config, "ANALYZE \(today)")
                let holder = try await DurabilityTests.holdWriteLock(config, for: .seconds(1), table: today, mode: "ACCESS EXCLUSIVE")
                let dropped = try await PostgresStore.$partitionCountTimeout.withValue(.milliseconds(200)) {
                    try await store.dropPartitions(before: Self.today.addingTimeInterval(Self.day))
                }
                try await holder.value
                #expect(dropped.map(\.name) == [today])
                #expect(dropped.first?.estimated == true && dropped.first?.rows == 3, "\(dropped)")
                #expect(try await !Self.partitions(config).contains(today))
            }
        }
    }

    @Test func theSettingIsCheckedWhereItEnters() throws {
        let postgres = ["DATABASE_URL": "postgres://u@127.0.0.1:5432/d", "ENCRYPTION_KEY": EncryptionKey.generate()]
        #expect(try AppConfig.load(environment: postgres.merging(["MESSAGE_PARTITIONS": "daily"]) { $1 }).messagePartitions == .daily)
        #expect(try AppConfig.load(environment: postgres).messagePartitions == MessagePartitions.none)
        #expect(throws: ConfigError.self) { try AppConfig.load(environment: postgres.merging(["MESSAGE_PARTITIONS": "hourly"]) { $1 }) }
        #expect(throws: ConfigError.self) { try AppConfig.load(environment: ["MESSAGE_PARTITIONS": "daily"]) }
    }
}
