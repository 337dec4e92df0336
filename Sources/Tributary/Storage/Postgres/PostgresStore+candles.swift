import Logging
import PostgresNIO

/// `candles_1m` on PostgreSQL. Two batches commit at once here, and upserting the same minute
/// row from both would make the second wait for the first one's commit on every batch. So each
/// batch appends its minutes (`MinuteCandles`, computed by Tributary rather than by the busier
/// database) to `candle_deltas`: no conflicts, no waiting. `compactCandles`,
/// run every second by `CandleCompactor`, folds committed deltas into `candles_1m` in one
/// transaction. Queries read both tables, so a trade counts from the moment it is committed.
extension PostgresStore {
    package var candleTables: [String] { ["candles_1m", "candle_deltas"] }

    static let candleColumns =
        "instrument, bucket, exchange, open, high, low, close, volume, trade_count, open_time, open_id, close_time, close_id"

    /// The trades among the rows of `relation`, each as a one-trade candle of its minute.
    static func tradesAsCandles(_ relation: String) -> String {
        """
        SELECT instrument, to_timestamp(floor(extract(epoch FROM timestamp) / 60) * 60) AS bucket, exchange, price AS open, price AS high,
            price AS low, price AS close, COALESCE(quantity, 0) AS volume, 1 AS trade_count, timestamp AS open_time, id AS open_id,
            timestamp AS close_time, id AS close_id
        FROM \(relation)
        WHERE message_type = 'trade' AND price IS NOT NULL AND instrument IS NOT NULL
        """
    }

    /// Candles of `candles` (a query with `candleColumns`) merged per exchange, instrument and
    /// minute: open and close are the first and last trade by (time, id). In key order, so
    /// concurrent upserts lock rows in the same order.
    static func merged(_ candles: String) -> String {
        """
        SELECT instrument, bucket, exchange, (array_agg(open ORDER BY open_time, open_id))[1], max(high), min(low),
            (array_agg(close ORDER BY close_time DESC, close_id DESC))[1], sum(volume), sum(trade_count), min(open_time),
            (array_agg(open_id ORDER BY open_time, open_id))[1], max(close_time), (array_agg(close_id ORDER BY close_time DESC, close_id DESC))[1]
        FROM (\(candles)) AS candles
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        """
    }

    /// SQL for the timestamptz of `column`, whole microseconds since 1970 (exact: no float seconds).
    /// The `timestamptz` of whole microseconds since 1970, exact across years 0001 to 9999
    /// (`interval * number` goes through a double: whole seconds and the microseconds left over are
    /// each exact, their product as one number is not past 2^53 µs, about the year 2255).
    static func fromMicroseconds(_ column: String) -> String {
        "(timestamptz 'epoch' + (\(column)) / 1000000 * interval '1 second' + (\(column)) % 1000000 * interval '1 microsecond')"
    }

    /// Upserts merged candles into `candles_1m`, merging with the row already there.
    static func upsertCandles(_ candles: String) -> String {
        """
        INSERT INTO candles_1m AS c (\(candleColumns)) \(merged(candles))
        ON CONFLICT (instrument, bucket, exchange) DO UPDATE SET
            open = CASE WHEN (excluded.open_time, excluded.open_id) < (c.open_time, c.open_id) THEN excluded.open ELSE c.open END,
            open_id = CASE WHEN (excluded.open_time, excluded.open_id) < (c.open_time, c.open_id) THEN excluded.open_id ELSE c.open_id END,
            open_time = LEAST(c.open_time, excluded.open_time),
            close = CASE WHEN (excluded.close_time, excluded.close_id) > (c.close_time, c.close_id) THEN excluded.close ELSE c.close END,
            close_id = CASE WHEN (excluded.close_time, excluded.close_id) > (c.close_time, c.close_id) THEN excluded.close_id
                ELSE c.close_id END,
            close_time = GREATEST(c.close_time, excluded.close_time),
            high = GREATEST(c.high, excluded.high), low = LEAST(c.low, excluded.low), volume = c.volume + excluded.volume,
            trade_count = c.trade_count + excluded.trade_count
        """
    }

    /// Folds every committed delta into `candles_1m`; deltas committed meanwhile wait for the next call.
    public func compactCandles() async throws -> Int {
        try await run("compact candles") { [logger] client in
            try await client.withTransaction(logger: logger) { connection in
                // Its commit need not wait for the disk: lost in a crash, the whole fold is lost with
                // it, deltas included, and runs again. Ingest commits do not queue behind its flush.
                try await connection.query("SET LOCAL synchronous_commit = off", logger: logger)
                let rows = try await connection.query(
                    PostgresQuery(
                        unsafeSQL: """
                            WITH moved AS (DELETE FROM candle_deltas RETURNING \(Self.candleColumns)),
                                folded AS (\(Self.upsertCandles("SELECT * FROM moved")))
                            SELECT count(*) FROM moved
                            """
                    ),
                    logger: logger
                )
                for try await count in rows.decode(Int.self) { return count }
                return 0
            }
        }
    }

    public func rebuildCandles() async throws {
        try await run("rebuild candles", timeout: Migrations.timeout) { [logger] client in
            try await client.withTransaction(logger: logger) { connection in try await Self.rebuildCandles(on: connection, logger: logger) }
        }
    }

    /// Refills `candles_1m` from every stored trade.
    static func rebuildCandles(on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("DELETE FROM candle_deltas", logger: logger)
        try await connection.query("DELETE FROM candles_1m", logger: logger)
        try await connection.query(PostgresQuery(unsafeSQL: upsertCandles(tradesAsCandles("websocket_messages"))), logger: logger)
    }
}

/// A batch's `MinuteCandles` as the column arrays of one `UNNEST` insert into `candle_deltas`.
struct CandleDeltaColumns {
    var instruments: [String] = []
    var buckets: [Int64] = []
    var exchanges: [String] = []
    var opens: [String] = []
    var highs: [String] = []
    var lows: [String] = []
    var closes: [String] = []
    var volumes: [String] = []
    var counts: [Int64] = []
    var openTimes: [Int64] = []
    var openIDs: [Int64] = []
    var closeTimes: [Int64] = []
    var closeIDs: [Int64] = []

    init(_ minutes: MinuteCandles) {
        let count = minutes.parts.count
        instruments.reserveCapacity(count)
        buckets.reserveCapacity(count)
        exchanges.reserveCapacity(count)
        opens.reserveCapacity(count)
        highs.reserveCapacity(count)
        lows.reserveCapacity(count)
        closes.reserveCapacity(count)
        volumes.reserveCapacity(count)
        counts.reserveCapacity(count)
        openTimes.reserveCapacity(count)
        openIDs.reserveCapacity(count)
        closeTimes.reserveCapacity(count)
        closeIDs.reserveCapacity(count)
        for (key, part) in minutes.sorted {
            instruments.append(key.instrument)
            buckets.append(Timestamp.microseconds(key.bucket))
            exchanges.append(key.exchange)
            opens.append(part.open)
            highs.append(part.high)
            lows.append(part.low)
            closes.append(part.close)
            volumes.append(part.volume.description)
            counts.append(Int64(part.tradeCount))
            openTimes.append(Timestamp.microseconds(part.first.time))
            openIDs.append(part.first.id)
            closeTimes.append(Timestamp.microseconds(part.last.time))
            closeIDs.append(part.last.id)
        }
    }
}
