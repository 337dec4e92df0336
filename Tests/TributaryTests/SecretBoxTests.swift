import Foundation
import Logging
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

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

    /// A key rotation end to end: secrets sealed under the old key are resealed under the new one,
    /// after which the old key is no longer needed.
    /// Created without a supervisor, the service applies the default outbound policy (no loopback);
    /// nothing connects to it.
    static let publicURL: JSONValue = "wss://ws.okx.com:8443/ws/v5/public"

    @Test(arguments: TestBackend.enabled)
    func resealingMovesEverySecretToTheCurrentKey(_ backend: TestBackend) async throws {
        let old = try EncryptionKey(base64: EncryptionKey.generate())
        let new = try EncryptionKey(base64: EncryptionKey.generate())
        try await backend.withConfig { config in
            try await withStore(config, logger: Logger(label: "test")) { store in
                try await store.migrate()
                let before = ConnectorService(store: store, secretBox: SecretBox(current: old), logger: Logger(label: "test"))
                let body = try JSONValue.parse(
                    connectorBody("rotated", ["auth_type": "api_key", "api_key": "key-under-rotation-4321", "api_url": Self.publicURL])
                )
                let id = try await before.create(body).connectorID
                _ = try await before.create(try JSONValue.parse(connectorBody("no-secrets", ["api_url": Self.publicURL])))

                let rotating = ConnectorService(store: store, secretBox: SecretBox(current: new, previous: [old]), logger: Logger(label: "test"))
                #expect(try await rotating.resealSecrets() == 1, "one connector has secrets under the old key")
                #expect(try await rotating.resealSecrets() == 0, "and then none")

                let after = ConnectorService(store: store, secretBox: SecretBox(current: new), logger: Logger(label: "test"))
                let view = try await after.get(id)
                #expect(view.json["api_key"] == "****4321", "readable with the new key alone")
                #expect(throws: Never.self) { try after.definition(of: view.record) }
            }
        }
    }
}
