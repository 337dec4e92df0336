import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Where connectors may connect. A connector URL is user input: by default it may not reach
/// loopback, private (RFC 1918), link-local (cloud metadata at 169.254.169.254), CGNAT, unique
/// local, multicast or reserved addresses, nor IPv4-mapped or NAT64 forms of them. The operator
/// opens ranges with `TRIBUTARY_ALLOW_PRIVATE_TARGETS` (CIDRs, or `*` for everything).
///
/// Host names are resolved and every address they resolve to is checked right before each
/// connection attempt (and each REST poll), so a name that later points inward is refused then.
public struct OutboundPolicy: Sendable, Equatable {
    /// Ranges the operator allows although they are not public.
    public var allowed: [CIDR]
    /// `*`: no address is refused.
    public var allowsEverything: Bool

    public init(allowed: [CIDR] = [], allowsEverything: Bool = false) {
        self.allowed = allowed
        self.allowsEverything = allowsEverything
    }

    /// `*`, or CIDRs / addresses separated by commas (`127.0.0.1/32, 10.1.0.0/16, ::1`).
    public init?(parsing text: String) {
        let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if items == ["*"] {
            self.init(allowsEverything: true)
            return
        }
        var ranges: [CIDR] = []
        for item in items {
            guard let range = CIDR(item) else { return nil }
            ranges.append(range)
        }
        self.init(allowed: ranges)
    }

    /// Refused unless allowed: not globally routable, or not unicast.
    static let forbidden: [CIDR] =
        ([
            "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
            "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
            "::/128", "::1/128", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8", "2001:db8::/32", "100::/64",
        ] as [String]).compactMap { CIDR($0) }

    /// Why `address` (4 or 16 bytes) may not be connected to, or nil if it may.
    public func refusal(of address: [UInt8]) -> String? {
        if allowsEverything { return nil }
        if allowed.contains(where: { $0.contains(address) }) { return nil }
        // An IPv6 form of an IPv4 address (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d) is judged as that address.
        if address.count == 16 {
            let mapped = address[0..<10].allSatisfy { $0 == 0 } && address[10] == 0xFF && address[11] == 0xFF
            let nat64 = address[0..<12] == [0x00, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0]
            if mapped || nat64 { return refusal(of: Array(address[12..<16])) }
        }
        guard let range = Self.forbidden.first(where: { $0.contains(address) }) else { return nil }
        return "\(CIDR.text(of: address)) is in \(range) (not a public address); allow it with TRIBUTARY_ALLOW_PRIVATE_TARGETS"
    }

    /// Resolves `host` and throws `OutboundRefused` if it or any address it resolves to is refused.
    public func check(host: String) async throws {
        if allowsEverything { return }
        _ = try await checkedAddresses(of: host)
    }

    /// The addresses to connect to for `host`, in order: the literal itself, or every address the
    /// name resolves to, once each of them passed the policy (one refused address refuses all).
    public func checkedAddresses(of host: String) async throws -> [[UInt8]] {
        let bare = Self.bare(host)
        if let literal = CIDR.address(bare) {
            if let problem = refusal(of: literal) { throw OutboundRefused(detail: problem) }
            return [literal]
        }
        var addresses: [[UInt8]] = []
        for address in try await Self.resolve(bare) where !addresses.contains(address) { addresses.append(address) }
        guard !addresses.isEmpty else { throw OutboundRefused(detail: "\(bare) did not resolve") }
        for address in addresses {
            if let problem = refusal(of: address) { throw OutboundRefused(detail: "\(bare) resolves to \(problem)") }
        }
        return addresses
    }

    /// A host without the brackets of an IPv6 literal.
    static func bare(_ host: String) -> String {
        host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    }

    /// Checks the host of `url` (see `check(host:)`).
    public func check(url: String) async throws {
        guard let host = URL(string: url)?.host(), !host.isEmpty else { throw OutboundRefused(detail: "the URL has no host") }
        try await check(host: host)
    }

    /// Every address `host` resolves to (getaddrinfo, on NIO's blocking-I/O thread pool).
    static func resolve(_ host: String) async throws -> [[UInt8]] {
        try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var result: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, nil, &hints, &result)
            guard status == 0 else { throw OutboundRefused(detail: "\(host) could not be resolved (\(String(cString: gai_strerror(status))))") }
            defer { freeaddrinfo(result) }
            var addresses: [[UInt8]] = []
            var next = result
            while let entry = next {
                if let socket = entry.pointee.ai_addr {
                    switch Int32(socket.pointee.sa_family) {
                    case AF_INET:
                        socket.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                            addresses.append(withUnsafeBytes(of: pointer.pointee.sin_addr) { Array($0) })
                        }
                    case AF_INET6:
                        socket.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                            addresses.append(withUnsafeBytes(of: pointer.pointee.sin6_addr) { Array($0) })
                        }
                    default: break
                    }
                }
                next = entry.pointee.ai_next
            }
            return addresses
        }
    }
}

/// A connection refused by the `OutboundPolicy`.
public struct OutboundRefused: Error, Sendable, CustomStringConvertible {
    public var detail: String
    public var description: String { "outbound connection refused: \(detail)" }
}

/// An IPv4 or IPv6 address range (`10.0.0.0/8`, `::1/128`; a bare address is the single address).
public struct CIDR: Sendable, Equatable, CustomStringConvertible {
    public var address: [UInt8]
    public var prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = Self.address(String(parts[0])) else { return nil }
        let bits = address.count * 8
        var prefix = bits
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...bits).contains(value) else { return nil }
            prefix = value
        }
        self.address = address
        self.prefix = prefix
    }

    public var description: String { "\(Self.text(of: address))/\(prefix)" }

    public func contains(_ other: [UInt8]) -> Bool {
        guard other.count == address.count else { return false }
        var remaining = prefix
        for (mine, theirs) in zip(address, other) where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if mine & mask != theirs & mask { return false }
            remaining -= bits
        }
        return true
    }

    /// The 4 or 16 bytes of an IPv4 or IPv6 literal, or nil.
    static func address(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: v6) { Array($0) } }
        return nil
    }

    static func text(of address: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = address.count == 4 ? AF_INET : AF_INET6
        guard inet_ntop(family, address, &buffer, socklen_t(buffer.count)) != nil else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
