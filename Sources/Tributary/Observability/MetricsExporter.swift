import Foundation
import Hummingbird
import Prometheus
import Synchronization

/// `GET /metrics` in the Prometheus text format. Request counts and latencies and batch flush
/// histograms are recorded as they happen; per-connector counters, queue depth, realtime clients
/// and database activity are read from the live atomics at scrape time (counters advance by what
/// changed since the previous scrape, so they stay monotonic).
public final class MetricsExporter: Sendable {
    let pipeline: PipelineMetrics
    let buffer: IngestBuffer
    let broadcaster: Broadcaster
    let store: any ConnectorStore
    let deadLetters: DeadLetterQueue?
    var registry: PrometheusCollectorRegistry { pipeline.registry }
    /// What each counter last reported, by metric name and connector.
    private let reported = Mutex<[String: Int]>([:])
    static let latencyBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(10),
    ]

    public init(
        pipeline: PipelineMetrics,
        buffer: IngestBuffer,
        broadcaster: Broadcaster,
        store: any ConnectorStore,
        deadLetters: DeadLetterQueue? = nil
    ) {
        self.deadLetters = deadLetters
        self.pipeline = pipeline
        self.buffer = buffer
        self.broadcaster = broadcaster
        self.store = store
    }

    /// A metric's full name and help text (swift-prometheus splits names into parts; ours are whole).
    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// One answered HTTP request, by route pattern (never the raw path: ids would explode the series).
    func recordRequest(method: String, route: String, status: Int, duration: Duration) {
        registry.makeCounter(
            descriptor: Self.descriptor("tributary_http_requests_total", "HTTP requests answered, by route and status"),
            labels: [("method", method), ("route", route), ("status", String(status))]
        ).increment()
        registry.makeDurationHistogram(
            descriptor: Self.descriptor("tributary_http_request_duration_seconds", "HTTP request latency"),
            labels: [("method", method), ("route", route)],
            buckets: Self.latencyBuckets
        ).record(duration)
    }

    static let connectorCounters: [(String, String, @Sendable (ConnectorCounters) -> Int)] = [
        ("tributary_connector_messages_received_total", "Messages received and accepted", { $0.received.load(ordering: .relaxed) }),
        ("tributary_connector_messages_stored_total", "Messages committed to the database", { $0.stored.load(ordering: .relaxed) }),
        ("tributary_connector_messages_failed_total", "Frames or records that could not be normalized", { $0.failed.load(ordering: .relaxed) }),
        (
            "tributary_connector_messages_rejected_total", "Records refused at normalization because they could not be stored",
            { $0.rejected.load(ordering: .relaxed) }
        ),
        ("tributary_connector_messages_duplicate_total", "Messages already stored (same source_id)", { $0.duplicates.load(ordering: .relaxed) }),
        (
            "tributary_connector_messages_dropped_total", "Messages refused because the ingest buffer was full",
            { $0.dropped.load(ordering: .relaxed) }
        ),
        ("tributary_connector_reconnects_total", "WebSocket reconnects", { $0.reconnects.load(ordering: .relaxed) }),
        (
            "tributary_connector_disconnected_milliseconds_total", "Time between a connection's end and the next subscription",
            { $0.disconnectedMillis.load(ordering: .relaxed) }
        ),
        (
            "tributary_connector_trades_missed_while_disconnected_total", "Trades the exchange sent while disconnected (trade id gaps)",
            { $0.missedWhileDisconnected.load(ordering: .relaxed) }
        ),
        ("tributary_connector_polls_total", "REST polls sent", { $0.polls.load(ordering: .relaxed) }),
        ("tributary_connector_poll_errors_total", "REST polls that failed", { $0.pollFailures.load(ordering: .relaxed) }),
    ]

    /// Brings the scrape-time values up to date and renders everything.
    public func render() -> [UInt8] {
        let connectors = pipeline.connectors.withLock { $0 }
        for (id, counters) in connectors {
            for (name, help, read) in Self.connectorCounters {
                let value = read(counters)
                let delta = reported.withLock { reported in
                    let key = name + "\u{0}" + id
                    let previous = reported[key] ?? 0
                    reported[key] = value
                    return value - previous
                }
                let counter = registry.makeCounter(descriptor: Self.descriptor(name, help), labels: [("connector_id", id)])
                if delta > 0 { counter.increment(by: Int64(delta)) }
            }
        }
        let gauges: [(String, String, Int)] = [
            ("tributary_write_queue_depth", "Messages accepted and waiting to be written", buffer.depth),
            ("tributary_realtime_clients", "Connected realtime WebSocket clients", broadcaster.clientCount),
            ("tributary_db_operations_in_flight", "Database calls holding or waiting for a connection", store.operationsInFlight),
        ]
        for (name, help, value) in gauges { registry.makeGauge(descriptor: Self.descriptor(name, help)).set(to: Double(value)) }
        var spoolTotals: [(String, String, Int)] = []
        if let spool = buffer.spool {
            let snapshot = spool.snapshot
            let age = snapshot.oldestMicros.map { max(0, Date().timeIntervalSince1970 - Double($0) / 1_000_000) } ?? 0
            let spoolGauges: [(String, String, Double)] = [
                ("tributary_spool_bytes", "Bytes in spool segment files", Double(snapshot.bytes)),
                ("tributary_spool_records", "Spooled messages not yet in the database", Double(snapshot.records)),
                ("tributary_spool_unread_records", "Spooled messages the writer has not taken yet", Double(snapshot.unread)),
                ("tributary_spool_oldest_age_seconds", "Age of the oldest spooled message not yet in the database", age),
                ("tributary_spool_segments", "Spool segment files", Double(snapshot.segments)),
            ]
            for (name, help, value) in spoolGauges { registry.makeGauge(descriptor: Self.descriptor(name, help)).set(to: value) }
            spoolTotals = [
                (
                    "tributary_spool_corrupt_segments_total", "Damaged spool segments found (cut at the damage, a copy in corrupt/)",
                    snapshot.corruptSegments
                ),
                ("tributary_spool_truncated_bytes_total", "Bytes cut from damaged or torn spool segments", snapshot.truncatedBytes),
                ("tributary_spool_recovered_records_total", "Spooled messages found at start and replayed", snapshot.recoveredRecords),
                ("tributary_spool_write_failures_total", "Spool writes the disk refused (the messages stayed in memory)", snapshot.writeFailures),
            ]
        }
        let totals: [(String, String, Int)] =
            [
                ("tributary_realtime_dropped_updates_total", "Realtime updates dropped for slow clients", broadcaster.droppedCount),
                ("tributary_ingest_dropped_total", "Messages refused by the full ingest buffer", buffer.droppedCount),
                (
                    "tributary_realtime_unpersisted_updates_total",
                    "Messages sent to realtime clients before their commit because a write ran past REALTIME_UNPERSISTED_AFTER_MS",
                    buffer.announcedEarlyTotal
                ),
                (
                    "tributary_slow_writes_total",
                    "Batch writes that ran past SPOOL_SLOW_WRITE_MS (their messages and those behind got a spool copy)",
                    buffer.slowWritesTotal
                ),
                ("tributary_dead_letters_dropped_total", "Dead letters dropped because their queue was full", deadLetters?.droppedCount ?? 0),
                (
                    "tributary_batch_flush_failures_total", "Batch writes that failed and were retried",
                    pipeline.flushFailures.load(ordering: .relaxed)
                ),
            ] + spoolTotals
            + ((store as? PostgresStore).flatMap { $0.instanceID == nil ? nil : $0 }.map { postgres in
                [
                    (
                        "tributary_cluster_fenced_messages_total", "Messages refused as received under a lease this instance no longer holds",
                        postgres.fencedMessages.load(ordering: .relaxed)
                    ),
                    (
                        "tributary_cluster_periods_total", "Lease renewal periods run (one every LEASE_RENEW_MS, more when a change wakes them)",
                        postgres.heartbeats.load(ordering: .relaxed)
                    ),
                ]
            } ?? [])
        for (name, help, value) in totals {
            let delta = reported.withLock { reported in
                defer { reported[name] = value }
                return value - (reported[name] ?? 0)
            }
            let counter = registry.makeCounter(descriptor: Self.descriptor(name, help))
            if delta > 0 { counter.increment(by: Int64(delta)) }
        }
        return registry.emitToBuffer()
    }

    public func response() -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: render()))
        )
    }
}

/// Counts and times every request by its route pattern (`/api/connectors/{connector_id}`).
struct MetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let exporter: MetricsExporter

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        do {
            let response = try await next(request, context)
            exporter.recordRequest(
                method: request.method.rawValue,
                route: context.endpointPath ?? "unmatched",
                status: Int(response.status.code),
                duration: ContinuousClock.now - started
            )
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            exporter.recordRequest(
                method: request.method.rawValue,
                route: context.endpointPath ?? "unmatched",
                status: Int(status),
                duration: ContinuousClock.now - started
            )
            throw error
        }
    }
}
