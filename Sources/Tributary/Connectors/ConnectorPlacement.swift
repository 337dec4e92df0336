/// Where a connector runs, when that is not simply "here": with several instances on one
/// PostgreSQL the `ClusterCoordinator` decides, and an API change anywhere reaches the owner
/// through the database.
public protocol ConnectorPlacement: Sendable {
    /// The connector's stored configuration or desired state changed (or it was deleted).
    func changed(_ connectorID: String) async
}
