import Foundation
import NIOCore
import ServiceLifecycle

/// The schema: migrations and whether the database is ready.
public protocol SchemaMigrations: Sendable {
    /// Applies pending schema migrations; safe when several processes start at once.
    func migrate() async throws
    /// Throws `StoreError.unavailable` unless the database answers and every migration is applied.
    func checkReady() async throws
}

/// Connectors and their live status: what the connector API and the supervisor read and write.
public protocol ConnectorRepository: Sendable {
    /// Inserts a connector and its `stopped` status row; `StoreError.duplicateName` if the name is taken.
    func insertConnector(_ connector: NewConnector) async throws -> ConnectorRecord
    /// One page of connectors, oldest first, and the total count.
    func listConnectors(limit: Int, offset: Int) async throws -> (connectors: [ConnectorRecord], total: Int)
    func connector(id: String) async throws -> ConnectorRecord?
    /// Replaces a connector's configuration; `nil` if it does not exist.
    func updateConnector(id: String, config: ConnectorConfig, sealedSecrets: SealedSecrets) async throws -> ConnectorRecord?
    /// Deletes a connector, cascading to its status and data rows; `false` if it did not exist.
    func deleteConnector(id: String) async throws -> Bool
    /// Records a lifecycle action: the desired state and the resulting status.
    func setState(id: String, desired: DesiredState, status: ConnectorState, restarted: Bool) async throws -> ConnectorRecord?
    /// Connectors whose desired state is `running`, to resume at startup.
    func runningConnectors() async throws -> [ConnectorRecord]
    /// Writes live status rows of existing connectors (missing connectors are ignored).
    func updateStatuses(_ updates: [StatusUpdate]) async throws
}

/// Where the pipeline writes: batches of messages (after the buffer and spool), poll rows and
/// dead letters.
public protocol MessageSink: Sendable {
    /// Writes one batch in one transaction: the messages (multi-row, idempotent on
    /// `(connector_id, source_id)`) and its `websocket_batches` row. Returns each message's new id,
    /// or `nil` for a message already stored.
    func insertMessages(_ messages: [PendingMessage], batch: BatchRecord) async throws -> [Int64?]
    /// After a write whose outcome is unknown: nil if batch `batchID` was not committed, else the
    /// id each message got in it (nil for one that was already stored).
    func storedIDs(ofBatch batchID: String, messages: [PendingMessage]) async throws -> [Int64?]?
    /// How many `insertMessages` calls may usefully run at once (1 for a single-connection store).
    var concurrentBatchWrites: Int { get }
    /// The event loop the store's calls complete on, if it has one: the batch writer runs there.
    var eventLoop: (any EventLoop)? { get }
    /// Writes one REST poll result (`api_connector_data`) and returns its id.
    func insertAPIData(_ row: APIDataRow) async throws -> Int64
    /// Writes dead letters (records that will never be stored), in bulk.
    func insertDeadLetters(_ letters: [DeadLetter]) async throws
    /// Deletes all but the newest `keeping` dead letters.
    func pruneDeadLetters(keeping: Int) async throws
    /// Deletes at most `limit` rows of `table` stored before `cutoff`; returns how many.
    func deleteRows(of table: RetainedTable, before cutoff: Date, limit: Int) async throws -> Int
    /// Where `websocket_messages` is partitioned by day: creates the partitions of `now`'s day
    /// and the next few that are missing; returns their names.
    func preparePartitions(now: Date) async throws -> [String]
    /// Where `websocket_messages` is partitioned by day: drops the partitions that hold nothing
    /// but rows stored before `cutoff`; returns what it dropped.
    func dropPartitions(before cutoff: Date) async throws -> [DroppedPartition]
}

extension MessageSink {
    public var eventLoop: (any EventLoop)? { nil }
    /// One table, not partitioned: nothing to prepare.
    public func preparePartitions(now: Date) async throws -> [String] { [] }
    /// One table, not partitioned: its old rows go in bounded deletes.
    public func dropPartitions(before cutoff: Date) async throws -> [DroppedPartition] { [] }
}

/// A day partition of `websocket_messages` dropped by retention, and the rows it held: counted,
/// or PostgreSQL's estimate where counting took too long (`estimated`).
public struct DroppedPartition: Sendable {
    public let name: String
    public let rows: Int
    public let estimated: Bool
}

/// The tables `RETENTION_DAYS` applies to (by their `timestamp` column). `candles_1m` is kept.
public enum RetainedTable: String, Sendable, CaseIterable {
    case messages = "websocket_messages"
    case pollResults = "api_connector_data"
    case batches = "websocket_batches"
    case deadLetters = "dead_letters"
}

/// The read side of the query API.
public protocol MessageQueries: Sendable {
    /// Stored messages matching `query`, newest first (`timestamp`, then `id`).
    func messages(_ query: MessageQuery) async throws -> [MessageRecord]
    /// Priced messages of one instrument in `[since, until)`, oldest first.
    func priceHistory(
        instrument: String,
        exchange: String?,
        connectorID: String?,
        since: Date,
        until: Date,
        limit: Int
    ) async throws -> [MessageRecord]
    /// A connector's poll results, newest first.
    func apiData(connectorID: String, after: PageCursor?, limit: Int) async throws -> [APIDataRecord]
    /// Flushed batches, newest first.
    func batches(after: PageCursor?, limit: Int) async throws -> [BatchRow]
    /// Dead letters, newest first, of one connector or all.
    func deadLetters(connectorID: String?, after: PageCursor?, limit: Int) async throws -> [DeadLetterRecord]
    /// How many messages a connector has stored, and how many distinct `source_id`s among them.
    func messageCounts(connectorID: String) async throws -> (rows: Int, distinctSources: Int)
}

/// The `candles_1m` rollup of stored trades.
public protocol CandleStore: Sendable {
    /// OHLCV candles of one instrument's trades in `[since, until)`, oldest first, exact decimals.
    func candles(instrument: String, exchange: String?, since: Date, until: Date, interval: CandleInterval) async throws -> [Candle]
    /// Folds candle minutes staged by concurrent batches into `candles_1m`; returns how many.
    func compactCandles() async throws -> Int
    /// Refills the `candles_1m` rollup from every stored trade (for rows written around Tributary).
    func rebuildCandles() async throws
}

/// One database: every part above, implemented by the embedded SQLite store and the PostgreSQL
/// store and tested by one shared suite against both. Each user takes only the part it needs
/// (the batch writer a `MessageSink`, the query API `MessageQueries & CandleStore`, …). As a
/// `Service` it runs for the server's lifetime (PostgreSQL's connection pool lives in `run()`)
/// and closes its connections on shutdown.
public protocol ConnectorStore: SchemaMigrations, ConnectorRepository, MessageSink, MessageQueries, CandleStore, Service {
    /// Database calls running or waiting for a connection right now (a metric).
    var operationsInFlight: Int { get }
}

/// A connector to insert.
public struct NewConnector: Sendable {
    public var connectorID: String
    public var config: ConnectorConfig
    public var sealedSecrets: SealedSecrets
    /// Created by `serve --demo` for its fake exchange.
    public var demo: Bool

    public init(connectorID: String, config: ConnectorConfig, sealedSecrets: SealedSecrets, demo: Bool = false) {
        self.connectorID = connectorID
        self.config = config
        self.sealedSecrets = sealedSecrets
        self.demo = demo
    }
}

/// Connector secrets as stored: each an opaque `SecretBox` ciphertext, headers and query
/// parameters as the ciphertext of their JSON object.
public struct SealedSecrets: Sendable, Equatable {
    public var apiKey: String?
    public var apiSecret: String?
    public var passphrase: String?
    public var bearerToken: String?
    public var headers: String?
    public var queryParams: String?

    public init(
        apiKey: String? = nil,
        apiSecret: String? = nil,
        passphrase: String? = nil,
        bearerToken: String? = nil,
        headers: String? = nil,
        queryParams: String? = nil
    ) {
        self.apiKey = apiKey
        self.apiSecret = apiSecret
        self.passphrase = passphrase
        self.bearerToken = bearerToken
        self.headers = headers
        self.queryParams = queryParams
    }
}

/// A stored connector (`api_connectors` row) with its `connector_status` row.
public struct ConnectorRecord: Sendable, Equatable {
    public var id: Int64
    public var connectorID: String
    public var config: ConnectorConfig
    public var sealedSecrets: SealedSecrets
    public var desiredState: DesiredState
    public var createdAt: Date
    public var updatedAt: Date
    public var status: ConnectorStatusRecord
    /// Created by `serve --demo`: only the demo starts it.
    public var demo = false
    /// With several instances: the lease epoch this instance runs it under (kept in the snapshot).
    public var lease: Int64?
}

/// A `connector_status` row.
public struct ConnectorStatusRecord: Sendable, Equatable {
    public var status: ConnectorState
    public var lastError: String?
    public var performanceMetrics: JSONValue
    public var startedAt: Date?
    public var updatedAt: Date
}

/// Storage failures the API maps to responses: 409, 503, or a logged 500.
public enum StoreError: Error, Sendable, CustomStringConvertible {
    /// Another connector has this name.
    case duplicateName
    /// The database cannot be reached in time, or is not migrated; the API answers 503.
    case unavailable(String)
    /// A call did not finish within its deadline (`withDeadline`): the database may be slow rather
    /// than away, and a smaller write may get through. The API answers 503, as for `unavailable`.
    case timedOut(String)
    /// A stored value could not be read back (for example an unknown enum value).
    case corrupt(String)
    /// The database refused the data itself (a data exception, a constraint, a size limit):
    /// writing the same rows again cannot succeed. The reason names the SQLSTATE or SQLite code.
    case rejected(String)

    public var description: String {
        switch self {
        case .duplicateName: "a connector with this name already exists"
        case .unavailable(let reason), .timedOut(let reason): "database unavailable: \(reason)"
        case .corrupt(let reason): "stored data could not be read: \(reason)"
        case .rejected(let reason): "the database refused the data: \(reason)"
        }
    }

    /// True when retrying the same write cannot help.
    public var isPermanent: Bool {
        if case .rejected = self { return true }
        return false
    }
}

/// One REST poll result, an `api_connector_data` row.
public struct APIDataRow: Sendable {
    public var connectorID: String
    /// The normalized records, serialized JSON.
    public var data: String
    /// The response body as received (JSON text).
    public var rawResponse: String
    public var statusCode: Int
    public var responseTimeMs: Double
    public var sourceID: String
    public var sessionID: String
    public var timestamp: Date
}
