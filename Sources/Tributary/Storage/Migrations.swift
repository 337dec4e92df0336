/// One versioned schema change, written for each backend. Applied in order, recorded in
/// `schema_migrations`, never edited once released: add a new migration instead.
struct Migration: Sendable {
    let version: Int
    let name: String
    let postgres: [String]
    let sqlite: [String]
    /// After the statements, fill `candles_1m` from the stored trades (each store knows how).
    var rebuildsCandles = false
}

enum Migrations {
    static let all: [Migration] = [initialSchema, candleRollup, deadLetters, demoConnectors, cluster, leaseRates]
    static var latestVersion: Int { all.map(\.version).max() ?? 0 }
    /// Migrations and rollup rebuilds rewrite whole tables: they get an hour, not the pool timeout.
    static let timeout: Duration = .seconds(3600)

    /// The five tables of SPEC §2, with the seed's names, so its queries keep working.
    static let initialSchema = Migration(
        version: 1,
        name: "initial schema",
        postgres: [
            """
            CREATE TABLE api_connectors (
                id SERIAL PRIMARY KEY,
                connector_id TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL UNIQUE,
                connector_type TEXT NOT NULL CHECK (connector_type IN ('rest', 'websocket')),
                exchange TEXT NOT NULL,
                api_url TEXT NOT NULL,
                http_method TEXT NOT NULL DEFAULT 'GET',
                request_body JSONB,
                subscription_message JSONB,
                auth_type TEXT NOT NULL DEFAULT 'none',
                api_key TEXT,
                api_secret TEXT,
                passphrase TEXT,
                bearer_token TEXT,
                headers TEXT,
                query_params TEXT,
                signing JSONB,
                polling_interval INTEGER NOT NULL DEFAULT 1000,
                field_mapping JSONB,
                desired_state TEXT NOT NULL DEFAULT 'stopped' CHECK (desired_state IN ('running', 'stopped')),
                created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
                updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
            )
            """,
            """
            CREATE TABLE connector_status (
                id SERIAL PRIMARY KEY,
                connector_id TEXT NOT NULL UNIQUE REFERENCES api_connectors (connector_id) ON DELETE CASCADE,
                status TEXT NOT NULL DEFAULT 'stopped',
                last_error TEXT,
                performance_metrics JSONB NOT NULL DEFAULT '{}',
                started_at TIMESTAMPTZ,
                updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
            )
            """,
            """
            CREATE TABLE api_connector_data (
                id BIGSERIAL PRIMARY KEY,
                connector_id TEXT NOT NULL REFERENCES api_connectors (connector_id) ON DELETE CASCADE,
                data JSONB,
                raw_response JSONB,
                status_code INTEGER,
                response_time_ms DOUBLE PRECISION,
                source_id TEXT,
                session_id TEXT,
                timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW()
            )
            """,
            "CREATE INDEX idx_api_connector_data_connector_time ON api_connector_data (connector_id, timestamp DESC)",
            """
            CREATE TABLE websocket_messages (
                id BIGSERIAL PRIMARY KEY,
                connector_id TEXT NOT NULL,
                exchange TEXT NOT NULL,
                instrument TEXT,
                message_type TEXT NOT NULL DEFAULT 'other',
                price NUMERIC,
                quantity NUMERIC,
                side TEXT,
                data JSONB NOT NULL,
                source_id TEXT,
                session_id TEXT,
                exchange_timestamp TIMESTAMPTZ,
                timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW()
            )
            """,
            "CREATE INDEX idx_websocket_messages_time_exchange ON websocket_messages (timestamp DESC, exchange)",
            "CREATE INDEX idx_websocket_messages_instrument_time ON websocket_messages (instrument, timestamp DESC)",
            "CREATE INDEX idx_websocket_messages_exchange_instrument_time ON websocket_messages (exchange, instrument, timestamp DESC)",
            "CREATE INDEX idx_websocket_messages_connector_time ON websocket_messages (connector_id, timestamp DESC)",
            "CREATE UNIQUE INDEX idx_websocket_messages_source ON websocket_messages (connector_id, source_id)",
            """
            CREATE TABLE websocket_batches (
                id BIGSERIAL PRIMARY KEY,
                batch_id TEXT NOT NULL UNIQUE,
                connector_id TEXT,
                message_count INTEGER NOT NULL,
                messages JSONB NOT NULL DEFAULT '[]',
                metrics JSONB NOT NULL DEFAULT '{}',
                timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW()
            )
            """,
            "CREATE INDEX idx_websocket_batches_time ON websocket_batches (timestamp DESC)",
        ],
        sqlite: [
            """
            CREATE TABLE api_connectors (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connector_id TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL UNIQUE,
                connector_type TEXT NOT NULL CHECK (connector_type IN ('rest', 'websocket')),
                exchange TEXT NOT NULL,
                api_url TEXT NOT NULL,
                http_method TEXT NOT NULL DEFAULT 'GET',
                request_body TEXT,
                subscription_message TEXT,
                auth_type TEXT NOT NULL DEFAULT 'none',
                api_key TEXT,
                api_secret TEXT,
                passphrase TEXT,
                bearer_token TEXT,
                headers TEXT,
                query_params TEXT,
                signing TEXT,
                polling_interval INTEGER NOT NULL DEFAULT 1000,
                field_mapping TEXT,
                desired_state TEXT NOT NULL DEFAULT 'stopped' CHECK (desired_state IN ('running', 'stopped')),
                created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
                updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
            )
            """,
            """
            CREATE TABLE connector_status (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connector_id TEXT NOT NULL UNIQUE REFERENCES api_connectors (connector_id) ON DELETE CASCADE,
                status TEXT NOT NULL DEFAULT 'stopped',
                last_error TEXT,
                performance_metrics TEXT NOT NULL DEFAULT '{}',
                started_at TEXT,
                updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
            )
            """,
            """
            CREATE TABLE api_connector_data (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connector_id TEXT NOT NULL REFERENCES api_connectors (connector_id) ON DELETE CASCADE,
                data TEXT,
                raw_response TEXT,
                status_code INTEGER,
                response_time_ms REAL,
                source_id TEXT,
                session_id TEXT,
                timestamp TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
            )
            """,
            "CREATE INDEX idx_api_connector_data_connector_time ON api_connector_data (connector_id, timestamp DESC)",
            """
            CREATE TABLE websocket_messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connector_id TEXT NOT NULL,
                exchange TEXT NOT NULL,
                instrument TEXT,
                message_type TEXT NOT NULL DEFAULT 'other',
                price TEXT,
                quantity TEXT,
                side TEXT,
                data TEXT NOT NULL,
                source_id TEXT,
                session_id TEXT,
                exchange_timestamp TEXT,
                timestamp TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
            )
            """,
            "CREATE INDEX idx_websocket_messages_time_exchange ON websocket_messages (timestamp DESC, exchange)",
            "CREATE INDEX idx_websocket_messages_instrument_time ON websocket_messages (instrument, timestamp DESC)",
            "CREATE INDEX idx_websocket_messages_exchange_instrument_time ON websocket_messages (exchange, instrument, timestamp DESC)",
            "CREATE INDEX idx_websocket_messages_connector_time ON websocket_messages (connector_id, timestamp DESC)",
            "CREATE UNIQUE INDEX idx_websocket_messages_source ON websocket_messages (connector_id, source_id)",
            """
            CREATE TABLE websocket_batches (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                batch_id TEXT NOT NULL UNIQUE,
                connector_id TEXT,
                message_count INTEGER NOT NULL,
                messages TEXT NOT NULL DEFAULT '[]',
                metrics TEXT NOT NULL DEFAULT '{}',
                timestamp TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
            )
            """,
            "CREATE INDEX idx_websocket_batches_time ON websocket_batches (timestamp DESC)",
        ]
    )

    /// `candles_1m`: one row per exchange, instrument and minute of stored trades (see
    /// `CandleRollup`), filled from the trades already stored. PostgreSQL also gets
    /// `candle_deltas`, where concurrent batches append before their minutes are folded in.
    static let candleRollup = Migration(
        version: 2,
        name: "1-minute candle rollup",
        postgres: [
            """
            CREATE TABLE candles_1m (
                instrument TEXT NOT NULL,
                bucket TIMESTAMPTZ NOT NULL,
                exchange TEXT NOT NULL,
                open NUMERIC NOT NULL,
                high NUMERIC NOT NULL,
                low NUMERIC NOT NULL,
                close NUMERIC NOT NULL,
                volume NUMERIC NOT NULL,
                trade_count BIGINT NOT NULL,
                open_time TIMESTAMPTZ NOT NULL,
                open_id BIGINT NOT NULL,
                close_time TIMESTAMPTZ NOT NULL,
                close_id BIGINT NOT NULL,
                PRIMARY KEY (instrument, bucket, exchange)
            )
            """,
            // Each batch's minutes, until folded into candles_1m (see PostgresStore+candles).
            "CREATE TABLE candle_deltas (LIKE candles_1m)",
            "CREATE INDEX idx_candle_deltas_instrument_bucket ON candle_deltas (instrument, bucket)",
        ],
        sqlite: [
            """
            CREATE TABLE candles_1m (
                instrument TEXT NOT NULL,
                bucket TEXT NOT NULL,
                exchange TEXT NOT NULL,
                open TEXT NOT NULL,
                high TEXT NOT NULL,
                low TEXT NOT NULL,
                close TEXT NOT NULL,
                volume TEXT NOT NULL,
                trade_count INTEGER NOT NULL,
                open_time TEXT NOT NULL,
                open_id INTEGER NOT NULL,
                close_time TEXT NOT NULL,
                close_id INTEGER NOT NULL,
                PRIMARY KEY (instrument, bucket, exchange)
            ) WITHOUT ROWID
            """
        ],
        rebuildsCandles: true
    )

    /// `dead_letters`: records received but never stored, refused at normalization or by the
    /// database (see `DeadLetter`). Plain text columns, so any record can be kept.
    static let deadLetters = Migration(
        version: 3,
        name: "dead letters",
        postgres: [
            """
            CREATE TABLE dead_letters (
                id BIGSERIAL PRIMARY KEY,
                connector_id TEXT NOT NULL,
                source_id TEXT,
                session_id TEXT,
                stage TEXT NOT NULL,
                reason TEXT NOT NULL,
                error TEXT NOT NULL,
                raw TEXT NOT NULL,
                timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW()
            )
            """,
            "CREATE INDEX idx_dead_letters_time ON dead_letters (timestamp DESC, id DESC)",
            "CREATE INDEX idx_dead_letters_connector_time ON dead_letters (connector_id, timestamp DESC)",
        ],
        sqlite: [
            """
            CREATE TABLE dead_letters (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connector_id TEXT NOT NULL,
                source_id TEXT,
                session_id TEXT,
                stage TEXT NOT NULL,
                reason TEXT NOT NULL,
                error TEXT NOT NULL,
                raw TEXT NOT NULL,
                timestamp TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
            )
            """,
            "CREATE INDEX idx_dead_letters_time ON dead_letters (timestamp DESC, id DESC)",
            "CREATE INDEX idx_dead_letters_connector_time ON dead_letters (connector_id, timestamp DESC)",
        ]
    )

    /// `api_connectors.demo`: connectors that `serve --demo` created for its fake exchange. A
    /// plain `serve` never starts them (see `ConnectorSupervisor.resume`).
    static let demoConnectors = Migration(
        version: 4,
        name: "demo connectors",
        postgres: ["ALTER TABLE api_connectors ADD COLUMN demo BOOLEAN NOT NULL DEFAULT FALSE"],
        sqlite: ["ALTER TABLE api_connectors ADD COLUMN demo INTEGER NOT NULL DEFAULT 0"]
    )

    /// Several instances on one PostgreSQL (see `ClusterCoordinator`): `instances` (heartbeats)
    /// and `connector_leases` (owner, epoch, expiry per running connector). SQLite, which is
    /// single-instance, gets the same tables for a uniform schema and never writes them.
    static let cluster = Migration(
        version: 5,
        name: "instances and connector leases",
        postgres: [
            """
            CREATE TABLE instances (
                instance_id TEXT PRIMARY KEY,
                address TEXT NOT NULL,
                version TEXT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
                heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
                stopped_at TIMESTAMPTZ
            )
            """,
            """
            CREATE TABLE connector_leases (
                connector_id TEXT PRIMARY KEY REFERENCES api_connectors (connector_id) ON DELETE CASCADE,
                owner TEXT NOT NULL,
                epoch BIGINT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL,
                acquired_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
            )
            """,
            "CREATE INDEX idx_connector_leases_owner ON connector_leases (owner)",
        ],
        sqlite: [
            """
            CREATE TABLE instances (
                instance_id TEXT PRIMARY KEY, address TEXT NOT NULL, version TEXT NOT NULL, started_at TEXT NOT NULL,
                heartbeat_at TEXT NOT NULL, stopped_at TEXT
            )
            """,
            """
            CREATE TABLE connector_leases (
                connector_id TEXT PRIMARY KEY REFERENCES api_connectors (connector_id) ON DELETE CASCADE,
                owner TEXT NOT NULL, epoch INTEGER NOT NULL, expires_at TEXT NOT NULL, acquired_at TEXT NOT NULL
            )
            """,
        ]
    )

    /// Balancing by message rate (see `ClusterCoordinator.balanceRates`): each lease carries its
    /// connector's recent message rate, and a lease can be handed to a named instance
    /// (`offered_to`): reserved for it until it expires, or, on a held lease, a request to its
    /// owner to hand it over.
    static let leaseRates = Migration(
        version: 6,
        name: "lease rates and hand-over offers",
        postgres: [
            "ALTER TABLE connector_leases ADD COLUMN rate DOUBLE PRECISION NOT NULL DEFAULT 0",
            "ALTER TABLE connector_leases ADD COLUMN offered_to TEXT",
        ],
        sqlite: [
            "ALTER TABLE connector_leases ADD COLUMN rate REAL NOT NULL DEFAULT 0",
            "ALTER TABLE connector_leases ADD COLUMN offered_to TEXT",
        ]
    )
}
