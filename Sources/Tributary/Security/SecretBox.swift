import Crypto
import Foundation
import _CryptoExtras

/// Encrypts connector secrets for storage: AES-256-GCM under the current key, tagged
/// `tsec1:<key id>:<nonce+ciphertext+tag>`; decrypts those under any configured key, and
/// legacy Fernet tokens written by the original Python deployment.
public struct SecretBox: Sendable {
    static let prefix = "tsec1"

    let current: EncryptionKey
    let keys: [String: EncryptionKey]

    /// - Parameters:
    ///   - current: the key new ciphertexts are written with.
    ///   - previous: older keys still accepted for decryption while data is rotated.
    public init(current: EncryptionKey, previous: [EncryptionKey] = []) {
        self.current = current
        var keys: [String: EncryptionKey] = [:]
        for key in previous { keys[key.id] = key }
        keys[current.id] = current
        self.keys = keys
    }

    public func seal(_ plaintext: String) throws -> String {
        let header = "\(Self.prefix):\(current.id)"
        let box = try AES.GCM.seal(Array(plaintext.utf8), using: current.gcmKey, authenticating: Array(header.utf8))
        guard let combined = box.combined else { throw SecretError.undecryptable }
        return "\(header):\(Base64.encodeURLSafeUnpadded(combined))"
    }

    /// Whether `token` was sealed under the current key (else a rotation still has to reseal it).
    public func isCurrent(_ token: String) -> Bool { token.hasPrefix("\(Self.prefix):\(current.id):") }

    public func open(_ token: String) throws(SecretError) -> String {
        let parts = token.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        if parts.count == 3, parts[0] == Self.prefix {
            guard let key = keys[String(parts[1])] else { throw .unknownKey(String(parts[1])) }
            guard let combined = Base64.decode(String(parts[2])),
                let box = try? AES.GCM.SealedBox(combined: combined),
                let plaintext = try? AES.GCM.open(box, using: key.gcmKey, authenticating: Array("\(parts[0]):\(parts[1])".utf8))
            else { throw .undecryptable }
            return String(decoding: plaintext, as: UTF8.self)
        }
        for key in [current] + keys.values.filter({ $0.id != current.id }) {
            if let plaintext = Fernet.decrypt(token, signingKey: key.fernetSigningKey, encryptionKey: key.fernetEncryptionKey) {
                return plaintext
            }
        }
        throw .undecryptable
    }
}

/// Why a stored secret could not be read. Carries no secret material.
public enum SecretError: Error, Equatable, CustomStringConvertible {
    case unknownKey(String)
    case undecryptable

    public var description: String {
        switch self {
        case .unknownKey(let id): "secret was encrypted with key id \(id), which is not configured (ENCRYPTION_KEY / ENCRYPTION_KEYS_PREVIOUS)"
        case .undecryptable: "secret could not be decrypted with the configured keys"
        }
    }
}

/// Reads Fernet tokens (https://github.com/fernet/spec): version 0x80, timestamp, IV,
/// AES-128-CBC ciphertext, HMAC-SHA256 over all of it.
enum Fernet {
    static func decrypt(_ token: String, signingKey: SymmetricKey, encryptionKey: SymmetricKey) -> String? {
        guard let bytes = Base64.decode(token), bytes.count >= 57 + 16, (bytes.count - 57) % 16 == 0, bytes[0] == 0x80 else {
            return nil
        }
        let signed = bytes[0..<(bytes.count - 32)]
        let mac = bytes[(bytes.count - 32)...]
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: signed, using: signingKey) else { return nil }
        guard let iv = try? AES._CBC.IV(ivBytes: bytes[9..<25]),
            let plaintext = try? AES._CBC.decrypt(bytes[25..<(bytes.count - 32)], using: encryptionKey, iv: iv)
        else { return nil }
        return String(validating: plaintext, as: UTF8.self)
    }
}
