import Foundation
import Testing

@testable import Tributary

@Suite struct SecretBoxTests {
    @Test func sealsWithAKeyIdAndOpensAgain() throws {
        let key = try EncryptionKey(base64: EncryptionKey.generate())
        let box = SecretBox(current: key)
        let sealed = try box.seal("my-api-secret")
        #expect(sealed.hasPrefix("tsec1:\(key.id):"))
        #expect(!sealed.contains("my-api-secret"))
        #expect(try box.open(sealed) == "my-api-secret")
        #expect(try box.seal("my-api-secret") != sealed, "every seal uses a fresh nonce")
    }

    @Test func standardAndURLSafeBase64KeysAreTheSameKey() throws {
        let urlSafe = EncryptionKey.generate()
        let standard = urlSafe.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        #expect(try EncryptionKey(base64: urlSafe).id == EncryptionKey(base64: standard).id)
    }

    @Test func rotatedKeysStillOpenOldSecrets() throws {
        let old = try EncryptionKey(base64: EncryptionKey.generate())
        let new = try EncryptionKey(base64: EncryptionKey.generate())
        let sealedUnderOld = try SecretBox(current: old).seal("legacy")
        #expect(try SecretBox(current: new, previous: [old]).open(sealedUnderOld) == "legacy")
        #expect(throws: SecretError.unknownKey(old.id)) { try SecretBox(current: new).open(sealedUnderOld) }
    }

    @Test func tamperedCiphertextIsRejected() throws {
        let box = SecretBox(current: try EncryptionKey(base64: EncryptionKey.generate()))
        var sealed = Array(try box.seal("value").utf8)
        sealed[sealed.count - 3] = sealed[sealed.count - 3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(throws: SecretError.undecryptable) { try box.open(String(decoding: sealed, as: UTF8.self)) }
    }

    struct FernetFixtures: Decodable {
        struct Case: Decodable {
            let plaintext: String
            let token: String
        }

        let key: String
        let cases: [Case]
        let other_key_token: String

        static func load() throws -> FernetFixtures {
            let url = try #require(Bundle.module.url(forResource: "Fixtures/fernet_fixtures", withExtension: "json"))
            return try JSONDecoder().decode(FernetFixtures.self, from: Data(contentsOf: url))
        }
    }

    @Test func legacyFernetTokensFromPythonDecrypt() throws {
        let fixtures = try FernetFixtures.load()
        let box = SecretBox(current: try EncryptionKey(base64: fixtures.key))
        #expect(fixtures.cases.count == 5)
        for fixture in fixtures.cases {
            #expect(try box.open(fixture.token) == fixture.plaintext)
        }
        #expect(throws: SecretError.undecryptable) { try box.open(fixtures.other_key_token) }
    }

    @Test func keyFileIsCreatedOnceWithMode0600() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tributary-key-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try EncryptionKey.loadOrCreate(inDirectory: directory)
        let second = try EncryptionKey.loadOrCreate(inDirectory: directory)
        #expect(first == second)
        _ = try EncryptionKey(base64: first)
        let attributes = try FileManager.default.attributesOfItem(atPath: directory + "/encryption.key")
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
    }

    @Test func apiTokensCompareExactly() {
        let verifier = APITokenVerifier(tokens: ["alpha-token", "beta-token"])
        #expect(verifier.isValid("alpha-token"))
        #expect(verifier.isValid("beta-token"))
        #expect(!verifier.isValid("alpha-toke"))
        #expect(!verifier.isValid("alpha-token "))
        #expect(!verifier.isValid(""))
        #expect(!APITokenVerifier(tokens: []).isEnabled)
    }
}
