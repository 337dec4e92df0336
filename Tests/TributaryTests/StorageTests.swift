import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO
import ServiceLifecycle
import Synchronization
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

/// The schema and the store contract, on both backends, checked with raw SQL.
@Suite(.timeLimit(.minutes(3))) struct StorageTests {
    static let logger = Logger(label: "storage-test")

    /// A batch id is `batch_` and 32 lowercase hex digits, never repeated: the retry of a write
    /// asks the database whether its id committed, so two batches must never share one.
    @Test func batchIDsAreDistinctAndKeepTheirForm() {
        let ids = (0..<10_000).map { _ in BatchWriter.newBatchID() }
        #expect(Set(ids).count == ids.count)
        let digits = Set("0123456789abcdef")
        #expect(ids.allSatisfy { $0.count == 38 && $0.hasPrefix("batch_") && $0.dropFirst(6).allSatisfy(digits.contains) })
        // One random half for the process; the other half counts.
        #expect(Set(ids.map { $0.prefix(22) }).count == 1)
    }

    /// Runs `body` with a store on `config`, its service running.
    static func withStore<Value: Sendable>(
        _ config: AppConfig,
        _ body: @Sendable @escaping (any ConnectorStore) async throws -> Value
    ) async throws -> Value {
        try await Tributary.withStore(config, logger: logger, body)
    }

    @Test(arguments: TestBackend.enabled)
    func migrationsApplyOnceEvenWhenRunTwiceAndConcurrently(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await Self.withStore(config) { first in
                try await Self.withStore(config) { second in
                    async let one: Void = first.migrate()
                    async let two: Void = second.migrate()
                    _ = try await (one, two)
                    try await first.migrate()
                    try await second.checkReady()
                }
            }
            let versions = try await RawDatabase.strings(config, "SELECT CAST(version AS TEXT) FROM schema_migrations ORDER BY version")
            #expect(versions == Migrations.all.map { "\($0.version)" })
        }
    }

    /// A database written by the first release (schema version 1) gets `candles_1m` filled from
    /// its stored trades when it is upgraded.
    @Test(arguments: TestBackend.enabled)
    func upgradingFillsTheCandleRollupFromStoredTrades(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            let text = backend == .sqlite ? "TEXT" : "TIMESTAMPTZ"
            try await Self.withStore(config) { _ in }  // creates the (empty) SQLite file
            let statements = backend == .sqlite ? Migrations.initialSchema.sqlite : Migrations.initialSchema.postgres
            for statement in statements
                + [
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at \(text) NOT NULL DEFAULT CURRENT_TIMESTAMP)",
                    "INSERT INTO schema_migrations (version, name) VALUES (1, 'initial schema')",
                    """
                    INSERT INTO websocket_messages (connector_id, exchange, instrument, message_type, price, quantity, data, source_id, timestamp)
                    VALUES ('c', 'okx', 'BTC-USDT', 'trade', '100.000000001', '0.5', '{}', 'a', '2026-01-01T00:00:10.000000Z'),
                        ('c', 'okx', 'BTC-USDT', 'trade', '99', '0.25', '{}', 'b', '2026-01-01T00:00:50.000000Z'),
                        ('c', 'okx', 'BTC-USDT', 'trade', '101', '1', '{}', 'c', '2026-01-01T00:00:30.000000Z'),
                        ('c', 'okx', 'BTC-USDT', 'ticker', '500', '1', '{}', 'd', '2026-01-01T00:00:40.000000Z')
                    """,
                ]
            {
                _ = try await RawDatabase.strings(config, statement)
            }
            try await Self.withStore(config) { try await $0.migrate() }
            let row = try await RawDatabase.strings(
                config,
                """
                SELECT CAST(open AS TEXT) || ' ' || CAST(high AS TEXT) || ' ' || CAST(low AS TEXT) || ' ' || CAST(close AS TEXT) || ' '
                    || CAST(volume AS TEXT) || ' ' || CAST(trade_count AS TEXT) FROM candles_1m
                """
            )
            #expect(row == ["100.000000001 101 99 99 1.75 3"])
        }
    }

    @Test(arguments: TestBackend.enabled)
    func allFiveTablesExistWithTheSeedIndexes(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await Self.withStore(config) { try await $0.migrate() }
            let tableQuery =
                backend == .sqlite
                ? "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                : "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
            let tables = Set(try await RawDatabase.strings(config, tableQuery).compactMap { $0 })
            #expect(
                tables.isSuperset(of: [
                    "api_connectors", "connector_status", "api_connector_data", "websocket_messages", "websocket_batches", "schema_migrations",
                ])
            )
            let indexQuery =
                backend == .sqlite
                ? "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'websocket_messages'"
                : "SELECT indexname::text FROM pg_indexes WHERE tablename = 'websocket_messages'"
            let indexes = Set(try await RawDatabase.strings(config, indexQuery).compactMap { $0 })
            #expect(
                indexes.isSuperset(of: [
                    "idx_websocket_messages_time_exchange", "idx_websocket_messages_instrument_time",
                    "idx_websocket_messages_exchange_instrument_time", "idx_websocket_messages_connector_time", "idx_websocket_messages_source",
                ])
            )
        }
    }

    @Test(arguments: TestBackend.enabled)
    func deletingAConnectorCascadesToStatusAndData(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            let id = "conn_cascade"
            try await Self.withStore(config) { store in
                try await store.migrate()
                _ = try await store.insertConnector(NewConnector(connectorID: id, config: .restSample("cascade"), sealedSecrets: SealedSecrets()))
            }
            _ = try await RawDatabase.strings(
                config,
                "INSERT INTO api_connector_data (connector_id, data, status_code, source_id, session_id) VALUES ('\(id)', '{}', 200, 's', 'x')"
            )
            #expect(try await RawDatabase.strings(config, "SELECT connector_id FROM connector_status") == [id])
            #expect(try await Self.withStore(config) { try await $0.deleteConnector(id: id) })
            #expect(try await RawDatabase.strings(config, "SELECT connector_id FROM connector_status").isEmpty)
            #expect(try await RawDatabase.strings(config, "SELECT connector_id FROM api_connector_data").isEmpty)
            #expect(try await !Self.withStore(config) { try await $0.deleteConnector(id: id) })
        }
    }

    @Test(arguments: TestBackend.enabled)
    func websocketMessagesAreIdempotentOnSourceID(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await Self.withStore(config) { try await $0.migrate() }
            let insert = """
                INSERT INTO websocket_messages (connector_id, exchange, instrument, message_type, price, quantity, data, source_id)
                VALUES ('c', 'okx', 'BTC-USDT', 'trade', '65432.123456789012345678', '0.00000001', '{"instrument":"BTC-USDT"}', 'okx:trades:BTC-USDT:1')
                ON CONFLICT (connector_id, source_id) DO NOTHING RETURNING id
                """
            #expect(try await RawDatabase.strings(config, insert).count == 1)
            #expect(try await RawDatabase.strings(config, insert).isEmpty, "a re-delivered message is not stored twice")
            let price = try await RawDatabase.strings(config, "SELECT CAST(price AS TEXT) FROM websocket_messages")
            #expect(price == ["65432.123456789012345678"], "prices are stored exactly")
        }
    }

    /// A trade an exchange repeats inside one batch is one row: the repeat gets no id (so it is
    /// not broadcast again), and the candle and the batch row count it once.
    @Test(arguments: TestBackend.enabled)
    func aTradeRepeatedInOneBatchIsStoredAndCountedOnce(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await Self.withStore(config) { store in
                try await store.migrate()
                let batch = [1, 2, 1].map(SQLiteDirectTests.pending)
                let ids = try await store.insertMessages(batch, batch: BatchRecord(batchID: "b_repeat", connectorID: nil, metrics: [:]))
                #expect(ids.map { $0 != nil } == [true, true, false])
                _ = try await store.compactCandles()
                #expect(try await RawDatabase.strings(config, "SELECT CAST(COUNT(*) AS TEXT) FROM websocket_messages") == ["2"])
                #expect(try await RawDatabase.strings(config, "SELECT CAST(SUM(trade_count) AS TEXT) FROM candles_1m") == ["2"])
                let listed = try await RawDatabase.strings(config, "SELECT CAST(messages AS TEXT) FROM websocket_batches")
                #expect(listed.map { $0?.filter { $0 == "," }.count } == [1], "two ids listed: \(listed)")
            }
        }
    }

    @Test func seedExampleQueryRunsUnchangedOnPostgreSQL() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        try await TestBackend.postgres.withConfig { config in
            try await Self.withStore(config) { try await $0.migrate() }
            _ = try await RawDatabase.strings(
                config,
                """
                INSERT INTO websocket_messages (connector_id, exchange, instrument, message_type, price, data, source_id)
                VALUES ('c', 'okx', 'BTC-USDT', 'trade', 1, '{"instrument":"BTC-USDT"}', 'a'),
                       ('c', 'okx', 'ETH-USDT', 'trade', 1, '{"instrument":"ETH-USDT"}', 'b')
                RETURNING id::text
                """
            )
            let rows = try await RawDatabase.strings(
                config,
                "SELECT * FROM websocket_messages WHERE data->>'instrument' = 'BTC-USDT' AND timestamp > NOW() - INTERVAL '1 hour'"
            )
            #expect(rows.count == 1)
        }
    }

    /// A "database" that accepts TCP connections and never answers: the worst kind of outage.
    static func withSilentServer<Value>(_ body: (Int) async throws -> Value) async throws -> Value {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { _ in MultiThreadedEventLoopGroup.singleton.any().makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { channel.close(promise: nil) }
        return try await body(channel.localAddress!.port!)
    }

    @Test func deadDatabaseAnswers503WithinThePoolTimeout() async throws {
        try await Self.withSilentServer { port in
            var config = AppConfig()
            config.host = "127.0.0.1"
            config.port = 0
            config.encryptionKey = TestBackend.testKey
            config.poolTimeout = .seconds(1)
            config.database = .postgres(PostgresSettings(host: "127.0.0.1", port: port, username: "u", password: "p", database: "d", tls: .disable))
            let store = try await makeStore(config, logger: Self.logger)
            let service = ConnectorService(store: store, secretBox: try makeSecretBox(config), logger: Self.logger)
            let app = Application(
                router: buildRouter(config: config, store: store, service: service),
                configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                services: [store]
            )
            try await app.test(.live) { client in
                for path in ["/ready", "/api/connectors"] {
                    let started = ContinuousClock.now
                    let response = try await client.json(.get, path)
                    let elapsed = ContinuousClock.now - started
                    #expect(response.status == .serviceUnavailable)
                    #expect(response.body["error_code"] == "DATABASE_UNAVAILABLE")
                    #expect(elapsed < .seconds(3), "answered after \(elapsed), not after PostgresNIO's minute")
                }
                #expect(try await client.json(.get, "/health").status == .ok)
            }
        }
    }
}

extension ConnectorConfig {
    /// A plain REST connector's configuration, for tests that need a connector row.
    static func restSample(_ name: String) -> ConnectorConfig {
        ConnectorConfig(
            name: name,
            connectorType: .rest,
            apiURL: "https://example.org/x",
            exchange: .custom,
            subscriptionMessage: nil,
            httpMethod: .GET,
            requestBody: nil,
            authType: .none,
            signing: nil,
            pollingInterval: 1000,
            fieldMapping: nil
        )
    }
}

/// PostgreSQL writes batches with `COPY` and falls back to `INSERT ... ON CONFLICT`: both store
/// exactly the same values, and a batch that meets stored rows loses none of its new ones.
@Suite(.timeLimit(.minutes(3))) struct CopyWriteTests {
    /// Messages with everything COPY's text format must escape, and times across the range.
    static func awkward(_ connector: String) -> [PendingMessage] {
        let texts = ["back\\slash", "tab\there", "new\nline", "cr\rreturn", "quote\"s", "ünïcødé ✓ 🚀", "\\N", "end\\"]
        let times: [Int64?] = [nil, 0, -1_000, 1_767_225_600_123, 253_402_300_799_999, 951_782_400_000, 4_107_542_400_000, 1]
        let received: [Double] = [1_767_225_600.123456, 0.000001, -86_400.5, 253_402_300_799.999, 951_782_399.999999, 1e9, 1, 1_767_225_601]
        return texts.indices.map { index in
            var message = HardeningTests.trade { message in
                message.sourceID = "okx:trades:BTC-USDT:\(index)"
                message.price = ["0.00000001", "123456789012345678.123456789", "100"][index % 3]
                message.instrument = index == 2 ? nil : "I-\(texts[index])"
                message.side = index == 3 ? nil : texts[index]
                message.exchangeTimestampMs = times[index]
                message.raw = ["text": .string(texts[index]), "n": .number("\(index)"), "é": ["Zz": 1, "a": 2], "zz": .null]
            }
            message.quantity = index == 4 ? nil : "1.5"
            return PendingMessage(
                connectorID: connector,
                sessionID: "ws_\(texts[index])",
                sourceID: message.sourceID ?? "",
                message: message,
                receivedAt: Date(timeIntervalSince1970: received[index])
            )
        }
    }

    static let columns =
        "exchange, instrument, message_type, price::text, quantity::text, side, data::text, source_id, session_id, exchange_timestamp::text, timestamp::text"

    /// The eight-byte skip over text with nothing to escape: every byte value in every position.
    @Test func theWordCheckFindsEveryByteToEscape() {
        for position in 0..<8 {
            for value in 0...255 {
                var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: 8)
                bytes[position] = UInt8(value)
                let word = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
                let expected = value == Int(UInt8(ascii: "\\")) || value < 0x0E
                #expect(CopyRows.mayNeedEscape(word) == expected, "byte \(value) at \(position)")
            }
        }
        // Long text: escapes before, inside and after eight-byte runs, and UTF-8 beside them.
        for text in ["ünïcødé ✓ 🚀 then a\tab", String(repeating: "x", count: 23) + "\n" + "ü", "\\" + String(repeating: "y", count: 16)] {
            var buffer = ByteBuffer()
            CopyRows.field(text, &buffer)
            let expected = text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\t", with: "\\t")
                .replacingOccurrences(of: "\n", with: "\\n")
            #expect(buffer.readString(length: buffer.readableBytes) == expected)
        }
    }

    @Test func everyWritePathStoresTheSameValues() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        try await TestBackend.postgres.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let postgres = try #require(store as? PostgresStore)
                let modes: [(String, PostgresStore.WriteMode)] = [
                    ("conn_copy", .copy), ("conn_one", .oneStatement), ("conn_insert", .insertOnConflict),
                ]
                var returned: [String: [Int64?]] = [:]
                for (connector, mode) in modes {
                    returned[connector] = try await postgres.writeMessages(
                        Self.awkward(connector),
                        batch: BatchRecord(batchID: "b_\(connector)", connectorID: nil, metrics: [:]),
                        mode: mode
                    )
                }
                #expect(returned.values.allSatisfy { $0.count == 8 && $0.allSatisfy { $0 != nil } })
                func rows(_ connector: String) async throws -> [String?] {
                    try await RawDatabase.strings(
                        config,
                        "SELECT concat_ws('|', id::text, \(Self.columns)) FROM websocket_messages WHERE connector_id = '\(connector)' ORDER BY source_id"
                    )
                }
                let strip = { (row: String?) in row.map { String($0.drop { $0 != "|" }) } }
                let reference = try await rows("conn_insert")
                #expect(reference.count == 8)
                for (connector, _) in modes {
                    // The ids the write returned are the rows' ids, and everything but the id is the same.
                    let stored = try await RawDatabase.strings(
                        config,
                        "SELECT id::text FROM websocket_messages WHERE connector_id = '\(connector)' ORDER BY id"
                    )
                    #expect(
                        stored.compactMap { $0.flatMap { Int64($0) } }.sorted() == (returned[connector] ?? []).compactMap { $0 }.sorted(),
                        "\(connector)"
                    )
                    #expect(try await rows(connector).map(strip) == reference.map(strip), "\(connector)")
                }
                #expect(reference.contains { $0?.contains("back\\slash") == true } && reference.contains { $0?.contains("tab\there") == true })
                // `data` goes in with its keys in jsonb's own order, which PostgreSQL keeps: read
                // back, it is the text written (so PostgreSQL sorted nothing).
                let data = try await RawDatabase.strings(
                    config,
                    "SELECT data::text FROM websocket_messages WHERE connector_id = 'conn_copy' ORDER BY source_id"
                )
                let written = Self.awkward("conn_copy").sorted { $0.sourceID < $1.sourceID }.map(\.data)
                #expect(try data.map { try JSONValue.parse($0 ?? "").serialized } == written)
                // The candle minutes and batch rows of each path are there too.
                let batches = try await RawDatabase.strings(config, "SELECT count(*)::text FROM websocket_batches WHERE batch_id LIKE 'b_conn_%'")
                #expect(batches == ["3"])
            }
        }
    }

    /// Both fast paths (one statement for small batches, COPY for large ones) fall back when a
    /// batch meets stored rows.
    @Test(arguments: [8, 300])
    func aBatchThatMeetsStoredRowsFallsBackAndKeepsTheNewOnes(size: Int) async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        try await TestBackend.postgres.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let postgres = try #require(store as? PostgresStore)
                let messages = (0..<size).map { index in
                    let message = HardeningTests.trade { $0.sourceID = "okx:trades:BTC-USDT:\(index)" }
                    return PendingMessage(
                        connectorID: "conn_a",
                        sessionID: "ws_1",
                        sourceID: message.sourceID ?? "",
                        message: message,
                        receivedAt: Date()
                    )
                }
                _ = try await store.insertMessages(Array(messages[2..<4]), batch: BatchRecord(batchID: "b1", connectorID: nil, metrics: [:]))
                let ids = try await store.insertMessages(messages, batch: BatchRecord(batchID: "b2", connectorID: nil, metrics: [:]))
                #expect(ids.enumerated().map { $0.element == nil } == messages.indices.map { (2..<4).contains($0) })
                #expect(postgres.copyConflicts.load(ordering: .relaxed) == 1)
                // The connector keeps to INSERT for a while: a second overlap costs no failed write.
                _ = try await store.insertMessages(messages, batch: BatchRecord(batchID: "b3", connectorID: nil, metrics: [:]))
                #expect(postgres.copyConflicts.load(ordering: .relaxed) == 1)
                #expect(try await RawDatabase.strings(config, "SELECT count(*)::text FROM websocket_messages") == ["\(size)"])
            }
        }
    }

    /// A small batch's call carries the binds of the procedure's statement, built without its
    /// text: the same values and types, in the same order, as with the text (which has one
    /// placeholder for each, numbered in that order).
    @Test func theWriteCallsBindsAreTheStatementsBuiltWithoutItsText() throws {
        let messages = Self.awkward("conn_binds")
        let ids = messages.indices.map { Int64($0) + 7 }
        let batch = BatchRecord(batchID: "batch_binds", connectorID: "conn_binds", metrics: [:])
        var withText = BoundSQL()
        let statement = PostgresStore.oneStatement(messages, ids: ids, batch: batch, metrics: "{}", instanceID: "i1", into: &withText)
        var bindsOnly = BoundSQL(withText: false)
        #expect(PostgresStore.oneStatement(messages, ids: ids, batch: batch, metrics: "{}", instanceID: "i1", into: &bindsOnly).isEmpty)
        #expect(bindsOnly.binds == withText.binds)
        #expect(bindsOnly.types == withText.types)
        #expect(withText.types.count > 30)
        var placeholders: Set<Int> = []
        for piece in statement.split(separator: "$").dropFirst() {
            if let number = Int(piece.prefix { $0.isNumber }) { placeholders.insert(number) }
        }
        #expect(placeholders == Set(1...withText.types.count))
    }

    /// A small batch is one call of the write procedure that `migrate` creates; a database
    /// without it (dropped, or never migrated by this version) gets it again on the first write,
    /// whether or not the writer's connection had prepared the call before.
    @Test func aSmallBatchCallsTheWriteProcedureAndCreatesItWhenMissing() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        let procedure = try #require(PostgresStore.writeProcedure)
        try await TestBackend.postgres.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let exists = "SELECT count(*)::text FROM pg_proc WHERE proname = '\(procedure.name)'"
                #expect(try await RawDatabase.strings(config, exists) == ["1"])
                _ = try await RawDatabase.strings(config, "DROP PROCEDURE \(procedure.name)")
                #expect(try await RawDatabase.strings(config, exists) == ["0"])
                for round in 0..<2 {
                    let messages = Self.awkward("conn_\(round)")
                    let ids = try await store.insertMessages(messages, batch: BatchRecord(batchID: "b\(round)", connectorID: nil, metrics: [:]))
                    #expect(ids.count == messages.count && ids.allSatisfy { $0 != nil })
                }
                #expect(try await RawDatabase.strings(config, exists) == ["1"])
                // The writer's connection prepares the call once. A preparation that failed (the
                // procedure missing) is not kept: the connection was closed, and its successor
                // prepared the call again.
                let postgres = try #require(store as? PostgresStore)
                #expect(postgres.writer.connectionsOpened == 2)
                // Dropped again once the call is prepared: the next write creates it again too.
                _ = try await RawDatabase.strings(config, "DROP PROCEDURE \(procedure.name)")
                for round in 2..<4 {
                    let messages = Self.awkward("conn_\(round)")
                    let ids = try await store.insertMessages(messages, batch: BatchRecord(batchID: "b\(round)", connectorID: nil, metrics: [:]))
                    #expect(ids.count == messages.count && ids.allSatisfy { $0 != nil })
                }
                #expect(try await RawDatabase.strings(config, exists) == ["1"])
                #expect(try await RawDatabase.strings(config, "SELECT count(*)::text FROM websocket_messages") == ["32"])
                #expect(try await RawDatabase.strings(config, "SELECT count(*)::text FROM websocket_batches") == ["4"])
            }
        }
    }

    /// A role that may write but not create the missing procedure writes small batches with COPY.
    @Test func aRoleThatMayNotCreateTheProcedureStillWrites() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        let procedure = try #require(PostgresStore.writeProcedure)
        try await TestBackend.postgres.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { try await $0.migrate() }
            guard case .postgres(var settings) = config.database else { return }
            let role = "writer_\(UUID().uuidString.prefix(8).lowercased())"
            for statement in [
                "CREATE ROLE \(role) LOGIN", "GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO \(role)",
                "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO \(role)", "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                "DROP PROCEDURE \(procedure.name)",
            ] {
                _ = try await RawDatabase.strings(config, statement)
            }
            settings.username = role
            var writer = config
            writer.database = .postgres(settings)
            try await Tributary.withStore(writer, logger: Logger(label: "test")) { store in
                for round in 0..<2 {
                    let messages = Self.awkward("conn_w\(round)")
                    let ids = try await store.insertMessages(messages, batch: BatchRecord(batchID: "b_w\(round)", connectorID: nil, metrics: [:]))
                    #expect(ids.count == messages.count && ids.allSatisfy { $0 != nil })
                    // Known missing after the first write: the second goes straight to COPY.
                    #expect((store as? PostgresStore)?.writeProcedureUnavailable.load(ordering: .relaxed) == true)
                }
            }
            #expect(try await RawDatabase.strings(config, "SELECT count(*)::text FROM websocket_messages") == ["16"])
            #expect(try await RawDatabase.strings(config, "SELECT count(*)::text FROM pg_proc WHERE proname = '\(procedure.name)'") == ["0"])
            for statement in ["DROP OWNED BY \(role)", "DROP ROLE \(role)"] { _ = try await RawDatabase.strings(config, statement) }
        }
    }

    /// Small batches go on the writer's own connection, kept from one batch to the next; when
    /// the server ends it, the next write opens another (one failed attempt at most, which the
    /// batch writer retries), and a batch the server refuses leaves it open.
    @Test func smallBatchesKeepTheWritersConnectionAndReopenItWhenItIsGone() async throws {
        guard TestBackend.enabled.contains(.postgres) else { return }
        try await TestBackend.postgres.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let postgres = try #require(store as? PostgresStore)
                // This test's database only: a store of an earlier test may still be closing its own.
                let writer = "application_name = '\(WriterConnection.applicationName)' AND datname = current_database()"
                let backends = "SELECT count(*)::text FROM pg_stat_activity WHERE \(writer)"
                func write(_ round: Int, batch: String = UUID().uuidString) async throws -> [Int64?] {
                    try await store.insertMessages(Self.awkward("conn_k\(round)"), batch: BatchRecord(batchID: batch, connectorID: nil, metrics: [:]))
                }
                for round in 0..<3 { #expect(try await write(round).allSatisfy { $0 != nil }) }
                #expect(postgres.writer.connectionsOpened == 1, "one connection for three batches")
                let writers = try await RawDatabase.strings(config, backends)
                #expect(writers == ["1"], "\(writers)")

                _ = try await RawDatabase.strings(
                    config,
                    "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity WHERE \(writer)"
                )
                var attempts = 0
                var stored = false
                while !stored, attempts < 3 {
                    attempts += 1
                    do { stored = try await write(3).allSatisfy { $0 != nil } } catch is StoreError {}
                }
                #expect(stored && attempts <= 2, "stored after \(attempts) attempts")
                #expect(postgres.writer.connectionsOpened == 2)
                #expect(try await eventually { try await RawDatabase.strings(config, backends) == ["1"] })

                // A batch the server refuses on it (rows already stored: a unique violation, then
                // written again through the pool with ON CONFLICT) is an answer, not a broken connection.
                #expect(try await write(0).allSatisfy { $0 == nil }, "nothing new in a batch written before")
                #expect(try await write(4).allSatisfy { $0 != nil })
                #expect(postgres.writer.connectionsOpened == 2, "still the same connection")
                #expect(try await RawDatabase.strings(config, "SELECT count(*)::text FROM websocket_messages") == ["40"])
            }
        }
    }
}

/// `RETENTION_DAYS`: old rows go in bounded deletes, recent ones and the candles stay.
@Suite(.timeLimit(.minutes(3))) struct RetentionTests {
    @Test(arguments: TestBackend.enabled)
    func oldRowsAreDeletedInBoundedStepsAndCandlesStay(_ backend: TestBackend) async throws {
        try await backend.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let now = Date()
                let old = now.addingTimeInterval(-40 * 86_400)
                func trade(_ index: Int, at date: Date) -> PendingMessage {
                    let message = HardeningTests.trade { message in
                        message.sourceID = "okx:trades:BTC-USDT:\(index)"
                        message.price = "\(100 + index)"
                        message.exchangeTimestampMs = Int64(date.timeIntervalSince1970 * 1000)
                    }
                    return PendingMessage(
                        connectorID: "conn_r",
                        sessionID: "ws_1",
                        sourceID: message.sourceID ?? "",
                        message: message,
                        receivedAt: date
                    )
                }
                let oldTrades = (0..<5).map { trade($0, at: old.addingTimeInterval(Double($0))) }
                _ = try await store.insertMessages(oldTrades, batch: BatchRecord(batchID: "b_old", connectorID: nil, metrics: [:]))
                _ = try await store.insertMessages(
                    [trade(10, at: now), trade(11, at: now)],
                    batch: BatchRecord(batchID: "b_new", connectorID: nil, metrics: [:])
                )
                try await store.insertDeadLetters([
                    DeadLetter(
                        connectorID: "conn_r",
                        sourceID: nil,
                        sessionID: nil,
                        stage: .normalize,
                        reason: "r",
                        error: "e",
                        raw: "{}",
                        timestamp: old
                    )
                ])
                _ = try await store.compactCandles()
                let candlesBefore = try await store.candles(
                    instrument: "BTC-USDT",
                    exchange: nil,
                    since: old.addingTimeInterval(-120),
                    until: old.addingTimeInterval(120),
                    interval: .oneMinute
                )

                var retention = Retention(store: store, days: 30, metrics: PipelineMetrics(), logger: Logger(label: "test"))
                retention.batchSize = 2
                retention.pause = .milliseconds(1)
                let deleted = try await retention.prune(now: now)
                #expect(deleted[.messages] == 5, "\(deleted)")
                #expect(deleted[.deadLetters] == 1)
                let left = try await RawDatabase.strings(config, "SELECT source_id FROM websocket_messages ORDER BY source_id")
                #expect(left == ["okx:trades:BTC-USDT:10", "okx:trades:BTC-USDT:11"])
                // The old minute's candle is still there, the same as before.
                let candlesAfter = try await store.candles(
                    instrument: "BTC-USDT",
                    exchange: nil,
                    since: old.addingTimeInterval(-120),
                    until: old.addingTimeInterval(120),
                    interval: .oneMinute
                )
                #expect(!candlesBefore.isEmpty && candlesAfter == candlesBefore)
                // Nothing more to delete the second time.
                #expect(try await retention.prune(now: now).values.reduce(0, +) == 0)
            }
        }
    }

    @Test func retentionDaysIsCheckedWhereItEnters() throws {
        #expect(try AppConfig.load(environment: ["RETENTION_DAYS": "30"]).retentionDays == 30)
        #expect(try AppConfig.load(environment: [:]).retentionDays == nil)
        for bad in ["0", "-1", "abc", "36501"] {
            #expect(throws: ConfigError.self) { try AppConfig.load(environment: ["RETENTION_DAYS": bad]) }
        }
    }
}

/// SQLite writes a batch through `SQLiteDirect`: one job on the thread pool, its
/// statements prepared once and kept (up to `statementCacheLimit`).
@Suite(.timeLimit(.minutes(3))) struct SQLiteDirectTests {
    static func pending(_ index: Int) -> PendingMessage {
        let message = HardeningTests.trade {
            $0.sourceID = "okx:trades:BTC-USDT:\(index)"
            $0.price = "\(100 + index % 7).25"
        }
        return PendingMessage(connectorID: "conn_sizes", sessionID: "ws_1", sourceID: message.sourceID ?? "", message: message, receivedAt: Date())
    }

    /// Batches of 80 sizes are all stored with their candle minutes and batch rows through a few
    /// kept statements; a batch that meets stored rows gets ids for the new ones only; more
    /// distinct statements than the cache keeps leave it within its limit.
    @Test func batchesOfManySizesAreStoredThroughTheStatementCache() async throws {
        try await TestBackend.sqlite.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let sqlite = try #require(store as? SQLiteStore)
                var next = 0
                for size in 1...80 {
                    let ids = try await store.insertMessages(
                        (next..<next + size).map(Self.pending),
                        batch: BatchRecord(batchID: "b\(size)", connectorID: "conn_sizes", metrics: [:])
                    )
                    #expect(ids.count == size && ids.allSatisfy { $0 != nil }, "batch of \(size)")
                    next += size
                }
                let overlapping = try await store.insertMessages(
                    (next - 5..<next + 5).map(Self.pending),
                    batch: BatchRecord(batchID: "b_overlap", connectorID: "conn_sizes", metrics: [:])
                )
                #expect(overlapping.map { $0 == nil } == Array(repeating: true, count: 5) + Array(repeating: false, count: 5))
                let counts = try await store.messageCounts(connectorID: "conn_sizes")
                #expect(counts.rows == 3_245 && counts.distinctSources == 3_245)
                #expect(try await RawDatabase.strings(config, "SELECT CAST(SUM(trade_count) AS TEXT) FROM candles_1m") == ["3245"])
                #expect(try await RawDatabase.strings(config, "SELECT CAST(COUNT(*) AS TEXT) FROM websocket_batches") == ["81"])
                let kept = try await sqlite.direct.run { $0.statementCount }
                #expect(kept > 0 && kept <= 8, "\(kept) statements kept for batches of every size")
                let afterMany = try await sqlite.direct.run { db in
                    for value in 0..<SQLiteDirect.statementCacheLimit * 2 { try db.query("SELECT \(value)") }
                    return db.statementCount
                }
                #expect(afterMany > 0 && afterMany <= SQLiteDirect.statementCacheLimit, "\(afterMany) statements kept")
            }
        }
    }

    /// `bench ingest --rate`'s storage floor replays what the store wrote for the run's
    /// connector: the rows each batch really inserted (a re-delivered one is in no batch's ids),
    /// in as many transactions as there were batches, paced over the time given, into a file
    /// with the same schema; another connector's batches are left out, and past its row limit
    /// only the first batches are replayed, at the same pace.
    @Test func theStorageFloorReplaysTheStoredTransactions() async throws {
        try await TestBackend.sqlite.withConfig { config in
            guard case .sqlite(let path) = config.database else { return }
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                for (round, range) in [0..<3, 3..<4, 2..<7].enumerated() {
                    _ = try await store.insertMessages(
                        range.map(Self.pending),
                        batch: BatchRecord(batchID: "b_floor\(round)", connectorID: "conn_sizes", metrics: [:])
                    )
                }
                let other = (100..<102).map { index in
                    let message = Self.pending(index).message
                    return PendingMessage(
                        connectorID: "conn_other",
                        sessionID: "ws_2",
                        sourceID: "other:\(index)",
                        message: message,
                        receivedAt: Date()
                    )
                }
                _ = try await store.insertMessages(other, batch: BatchRecord(batchID: "b_other", connectorID: "conn_other", metrics: [:]))
            }
            let floor = try await SQLiteFloor.measure(
                source: path,
                connectorID: "conn_sizes",
                scratch: config.dataDirectory + "/floor",
                over: 0.3,
                logger: Logger(label: "test")
            )
            #expect(floor.count == 3)
            #expect(floor.elapsed >= 0.2, "three transactions spread over 0.3 s")
            var replayed = config
            replayed.database = .sqlite(path: config.dataDirectory + "/floor/floor.sqlite")
            let rows =
                "SELECT \(SQLiteFloor.messageColumns.map { "coalesce(\($0), '-')" }.joined(separator: " || '|' || ")) FROM websocket_messages WHERE connector_id = 'conn_sizes' ORDER BY id"
            let original = try await RawDatabase.strings(config, rows)
            #expect(original.count == 7)
            #expect(try await RawDatabase.strings(replayed, rows) == original)
            #expect(try await RawDatabase.strings(replayed, "SELECT CAST(COUNT(*) AS TEXT) FROM websocket_messages") == ["7"])
            let batches =
                "SELECT batch_id || '|' || message_count || '|' || messages FROM websocket_batches WHERE connector_id = 'conn_sizes' ORDER BY id"
            #expect(try await RawDatabase.strings(replayed, batches) == RawDatabase.strings(config, batches))
            let schema = "SELECT type || ' ' || name FROM sqlite_master ORDER BY name"
            #expect(try await RawDatabase.strings(replayed, schema) == RawDatabase.strings(config, schema))

            // At most 4 rows: the first two batches (3 and 1 rows), started 0.1 s apart.
            let capped = try await SQLiteFloor.measure(
                source: path,
                connectorID: "conn_sizes",
                scratch: config.dataDirectory + "/floor",
                over: 0.3,
                maximumRows: 4,
                logger: Logger(label: "test")
            )
            #expect(capped.count == 2)
            #expect(try await RawDatabase.strings(replayed, "SELECT CAST(COUNT(*) AS TEXT) FROM websocket_messages") == ["4"])
            #expect(capped.elapsed >= 0.1 && capped.elapsed < 0.2, "\(capped.elapsed) s")
        }
    }

    /// Cancelling the caller (as a deadline does) interrupts the running statement and rolls
    /// back its transaction; the connection goes on working.
    @Test func aCancelledJobIsInterruptedAndRolledBack() async throws {
        try await TestBackend.sqlite.withConfig { config in
            try await Tributary.withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let sqlite = try #require(store as? SQLiteStore)
                let job = Task {
                    try await sqlite.direct.run { db in
                        try db.transaction("slow") {
                            try db.query("CREATE TABLE cancel_probe (x)")
                            // Minutes of counting, unless interrupted.
                            try db.query(
                                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5000000000) SELECT count(*) FROM c"
                            )
                        }
                    }
                }
                try await Task.sleep(for: .milliseconds(300))
                let cancelled = ContinuousClock.now
                job.cancel()
                await #expect(throws: StoreError.self) { try await job.value }
                #expect(ContinuousClock.now - cancelled < .seconds(5))
                let probe = try await sqlite.direct.run { db in try db.query("SELECT count(*) FROM sqlite_master WHERE name = 'cancel_probe'") }
                #expect(probe.first?.first?.integer == 0, "rolled back")
                let ids = try await store.insertMessages([Self.pending(1)], batch: BatchRecord(batchID: "b_after", connectorID: nil, metrics: [:]))
                #expect(ids.allSatisfy { $0 != nil })
            }
        }
    }
}

/// `bench ingest --rate`'s reading floor reads the fake exchange's stream with the connectors'
/// reader and measures from its first trade to its last.
@Suite(.timeLimit(.minutes(1))) struct ReadFloorTests {
    @Test func theReadingFloorCountsEveryTradeFrameOverTheStream() async throws {
        var options = SimulatorOptions()
        options.rate = 200
        options.total = 200
        options.tradesPerFrame = 1
        options.instruments = ["BTC-USDT", "ETH-USDT"]
        let exchange = FakeExchange(options: options)
        let floor = try await exchange.withRunning { port in
            try await ReadFloor.read(
                port: port,
                total: 200,
                instruments: exchange.options.instruments,
                linger: .milliseconds(5),
                within: .seconds(20),
                logger: Logger(label: "test")
            )
        }
        // Counted from the first trade: 199 more, about a second at 200 a second.
        #expect(floor.count == 199)
        #expect(floor.elapsed > 0.8 && floor.elapsed < 5, "\(floor.elapsed) s")
        #expect(floor.cpuSeconds >= 0)
    }
}
