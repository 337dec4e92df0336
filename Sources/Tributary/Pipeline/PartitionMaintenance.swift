import Foundation
import Logging
import ServiceLifecycle

/// Keeps the next days' partitions of `websocket_messages` made ahead, every `interval`, where
/// the store partitions it by day (PostgreSQL; see `MessageSink.preparePartitions`). The store
/// also makes them at every start, before anything is written, so this covers a server that runs
/// for days. A day that cannot be made goes to the default partition and is tried again.
public struct PartitionMaintenance: Service {
    let store: any MessageSink
    let logger: Logger
    var interval: Duration = .seconds(3600)

    public init(store: any MessageSink, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully, await sleepUnlessShuttingDown(for: interval) {
            do {
                _ = try await cancelWhenGracefulShutdown { try await store.preparePartitions(now: Date()) }
            } catch {
                if Task.isShuttingDownGracefully { break }
                logger.warning("could not prepare the next days' partitions; trying again in an hour", metadata: ["error": "\(error)"])
            }
        }
    }
}
