import Logging
import NIOCore
import NIOSSL
import PostgresNIO
import Synchronization

/// One connection the batch writer keeps for its one-statement writes (`WriteMode.oneStatement`),
/// outside the pool: at a steady rate every small batch is one `CALL`, and a lease and a release
/// from the pool cost more of the process's CPU than the call itself (the pool's own task wakes
/// for each, and a released connection arms an idle timer that the next lease cancels).
///
/// A write takes it only when it is free; a second write in flight at the same time, and every
/// other call, goes through the pool as before. It is opened at the first write (and after a
/// failure), on the store's event loop, and shows in `pg_stat_activity` as
/// `application_name = 'tributary-writer'`. A server's refusal of the rows (`refusesRowsOnly`)
/// leaves it open; any other failure (the connection itself, a deadline's cancellation in the
/// middle of a call, a refusal of the statement) closes it, and the next write opens another. It
/// is closed when the store stops.
final class WriterConnection: Sendable {
    private enum State {
        case free(PostgresConnection?)
        case taken
        case closed
    }

    private let state = Mutex<State>(.free(nil))
    private let configuration: PostgresConnection.Configuration?
    private let eventLoop: any EventLoop
    private let logger: Logger
    private let opened = Atomic<Int>(0)

    /// What `pg_stat_activity` shows for it.
    static let applicationName = "tributary-writer"

    /// `configuration` nil: no writer connection (every write uses the pool).
    init(configuration: PostgresConnection.Configuration?, eventLoop: any EventLoop, logger: Logger) {
        var configuration = configuration
        configuration?.options.additionalStartupParameters.append(("application_name", Self.applicationName))
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = logger
    }

    /// Connections opened so far (1 while it stays up; more after failures).
    var connectionsOpened: Int { opened.load(ordering: .relaxed) }

    /// Runs `body` on the writer's connection, opening it first if need be; nil without running
    /// it when the connection is taken by another write or the store has stopped (the caller
    /// then uses the pool).
    func withConnection<Value: Sendable>(_ body: (PostgresConnection) async throws -> Value) async throws -> Value? {
        guard let configuration else { return nil }
        let taken: PostgresConnection?? = state.withLock { state in
            guard case .free(let connection) = state else { return nil }
            state = .taken
            return .some(connection)
        }
        guard case .some(let kept) = taken else { return nil }
        var connection = kept.flatMap { $0.isClosed ? nil : $0 }
        do {
            let open: PostgresConnection
            if let connection {
                open = connection
            } else {
                let id = opened.wrappingAdd(1, ordering: .relaxed).newValue
                open = try await PostgresConnection.connect(on: eventLoop, configuration: configuration, id: id, logger: logger).get()
                connection = open
            }
            // A deadline that passed while it connected: the caller was told the write failed, so
            // it must not run now (the batch is written again).
            try Task.checkCancellation()
            let value = try await body(open)
            giveBack(open)
            return value
        } catch let error as PSQLError where Self.refusesRowsOnly(error) {
            giveBack(connection)
            throw error
        } catch {
            giveBack(nil)
            Self.drop(connection)
            throw error
        }
    }

    /// A server's refusal of the rows it was given (a constraint, class `23`, or a data exception,
    /// class `22`): the connection is fine. Any other refusal may be of the statement itself, which
    /// PostgresNIO remembers for a prepared statement for the connection's life (a procedure
    /// missing when it was first prepared would fail every later call without asking the server),
    /// so the connection is closed and the next write prepares it again on another.
    static func refusesRowsOnly(_ error: PSQLError) -> Bool {
        guard let state = error.serverInfo?[.sqlState] else { return false }
        return state.hasPrefix("23") || state.hasPrefix("22")
    }

    private func giveBack(_ connection: PostgresConnection?) {
        let stopped = state.withLock { state in
            guard case .taken = state else { return true }
            state = .free(connection)
            return false
        }
        if stopped { Self.drop(connection) }
    }

    /// Closes `connection` without waiting (held until it is closed: PostgresNIO asserts that a
    /// connection is closed before it goes).
    private static func drop(_ connection: PostgresConnection?) {
        guard let connection else { return }
        let closed: EventLoopFuture<Void> = connection.close()
        closed.whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    /// Closes the connection (once a write holding it gives it back) and opens no other.
    func close() {
        let connection: PostgresConnection? = state.withLock { state in
            defer { state = .closed }
            guard case .free(let connection) = state else { return nil }
            return connection
        }
        Self.drop(connection)
    }
}
