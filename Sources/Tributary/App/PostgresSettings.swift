import Foundation

/// Where and how to reach PostgreSQL, from `DATABASE_URL` or the `POSTGRES_*` variables.
public struct PostgresSettings: Sendable, Equatable {
    /// libpq's `sslmode`, reduced to what the client distinguishes.
    public enum TLSMode: String, Sendable {
        case disable
        /// TLS when the server offers it, without certificate checks (libpq `prefer`/`require`).
        case prefer
        case require
        /// TLS with the certificate and host name verified (libpq `verify-full`).
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var tls: TLSMode

    public init(host: String, port: Int, username: String, password: String?, database: String, tls: TLSMode) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
    }

    /// Parses `postgres://user:password@host:port/database?sslmode=...` (also `postgresql://`).
    public init(url text: String) throws(ConfigError) {
        let invalid = ConfigError("DATABASE_URL must look like postgres://user:password@host:5432/database")
        guard let components = URLComponents(string: text),
            let scheme = components.scheme?.lowercased(), scheme == "postgres" || scheme == "postgresql",
            let host = components.host, !host.isEmpty
        else { throw invalid }
        let database = String(components.path.drop { $0 == "/" })
        self.host = host
        self.port = components.port ?? 5432
        self.username = components.user?.removingPercentEncoding ?? "postgres"
        self.password = components.password?.removingPercentEncoding
        self.database = database.isEmpty ? username : (database.removingPercentEncoding ?? database)
        self.tls = .disable
        for item in components.queryItems ?? [] where item.name == "sslmode" {
            switch item.value ?? "" {
            case "disable", "allow": self.tls = .disable
            case "prefer": self.tls = .prefer
            case "require", "verify-ca": self.tls = .require
            case "verify-full": self.tls = .verifyFull
            default: throw ConfigError("DATABASE_URL sslmode must be disable, prefer, require, verify-ca or verify-full")
            }
        }
    }

    /// `user@host:port/database`, without the password.
    public var redactedDescription: String { "\(username)@\(host):\(port)/\(database)" }
}
