import Crypto
import Foundation

/// A 32-byte master key in the Fernet key format (base64, standard or URL-safe), from which
/// Tributary derives its AES-256-GCM subkey with HKDF; the raw halves serve legacy Fernet tokens.
public struct EncryptionKey: Sendable {
    /// Short identifier written in front of every ciphertext so keys can rotate.
    public let id: String
    let gcmKey: SymmetricKey
    let fernetSigningKey: SymmetricKey
    let fernetEncryptionKey: SymmetricKey

    /// Parses a base64 key; the error never contains the key.
    public init(base64 text: String) throws(ConfigError) {
        guard let bytes = Base64.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32 else {
            throw ConfigError("ENCRYPTION_KEY must be 32 random bytes in base64 (as printed by `tributary keygen`)")
        }
        let master = SymmetricKey(data: bytes)
        self.gcmKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: master,
            salt: Array("tributary".utf8),
            info: Array("tributary secrets aes-256-gcm v1".utf8),
            outputByteCount: 32
        )
        let idKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: master,
            salt: Array("tributary".utf8),
            info: Array("tributary key id v1".utf8),
            outputByteCount: 4
        )
        self.id = idKey.withUnsafeBytes { Base64.hex($0) }
        self.fernetSigningKey = SymmetricKey(data: bytes[0..<16])
        self.fernetEncryptionKey = SymmetricKey(data: bytes[16..<32])
    }

    /// A new random key in Fernet's URL-safe base64 format.
    public static func generate() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Base64.encodeURLSafe($0) }
    }

    /// Reads the key file in `directory`, creating it (mode 0600) with a new key on first use.
    public static func loadOrCreate(inDirectory directory: String) throws -> String {
        let path = (directory as NSString).appendingPathComponent("encryption.key")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        if descriptor >= 0 {
            let key = generate() + "\n"
            let written = key.utf8CString.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, key.utf8.count) }
            close(descriptor)
            guard written == key.utf8.count else { throw ConfigError("could not write the encryption key file \(path)") }
        } else if errno != EEXIST {
            throw ConfigError("could not create the encryption key file \(path): \(String(cString: strerror(errno)))")
        }
        guard let contents = FileManager.default.contents(atPath: path) else {
            throw ConfigError("could not read the encryption key file \(path)")
        }
        return String(decoding: contents, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Base64 in both alphabets, with or without padding, and hex.
enum Base64 {
    static func decode(_ text: String) -> [UInt8]? {
        var normalized = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        normalized = normalized.trimmingCharacters(in: CharacterSet(charactersIn: "="))
        guard normalized.count % 4 != 1 else { return nil }
        normalized += String(repeating: "=", count: (4 - normalized.count % 4) % 4)
        return Data(base64Encoded: normalized).map(Array.init)
    }

    static func encodeURLSafe(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    }

    static func encodeURLSafeUnpadded(_ bytes: some Sequence<UInt8>) -> String {
        encodeURLSafe(bytes).trimmingCharacters(in: CharacterSet(charactersIn: "="))
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = JSONValue.hexDigits
        var output: [UInt8] = []
        output.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            output.append(digits[Int(byte >> 4)])
            output.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: output, as: UTF8.self)
    }
}
