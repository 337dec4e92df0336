import Dispatch
import Foundation
import HTTPTypes
import Testing

@testable import Tributary
@testable import TributaryBench
@testable import TributarySimulator

#if canImport(Glibc)
import Glibc
#endif

/// The `tributary` executable itself: startup checks, graceful shutdown and exit codes.
@Suite struct CommandLineTests {
    /// The stall probe keeps only wake-ups later than its threshold and names the worst first,
    /// timed from the same origin as the slow spells; a probe on a quiet machine reports none.
    @Test func theStallProbeReportsLateWakeUpsWorstFirst() async throws {
        let probe = StallProbe(thresholdMs: 20)
        defer { probe.stop() }
        let start = 1_000_000.0
        probe.record(atMs: start + 2_000, lateMs: 35)
        probe.record(atMs: start + 500, lateMs: 19)
        probe.record(atMs: start + 7_250, lateMs: 412)
        #expect(
            probe.summary(since: start)
                == "machine stalls (1 ms sleeps of the bench's probe thread over 20 ms late): 2; worst: at 7.2 s, 412 ms late; at 2.0 s, 35 ms late"
        )
        let quiet = StallProbe(thresholdMs: 10_000)
        try await Task.sleep(for: .milliseconds(50))
        quiet.stop()
        #expect(quiet.summary(since: start) == "machine stalls: no 1 ms sleep of the bench's probe thread woke over 10000 ms late")
    }

    /// `bench ingest` names the spells of slow updates, so the tail can be traced to its cause.
    @Test func slowSpellsGroupSlowUpdatesSentCloseTogether() {
        // Sent every 0.5 ms from t = 1,000,000 ms: slow from 1 s to 1.1 s (worst 90 ms), and at 5 s.
        let sent = (0..<12_000).map { 1_000_000 + Double($0) / 2 }
        let latencies = sent.map { time -> Double in
            let offset = time - 1_000_000
            if offset >= 1_000, offset <= 1_100 { return 40 + (offset - 1_000) / 2 }
            if offset == 5_000 { return 31 }
            return 5
        }
        let summary = IngestBenchmark.slowSpells(sentMs: sent, latenciesMs: latencies)
        #expect(
            summary
                == "slow spells (updates over 30 ms): 2; worst: at 1.0 s for 100 ms, 201 updates, worst 90 ms; "
                + "at 5.0 s for 0 ms, 1 updates, worst 31 ms"
        )
        #expect(IngestBenchmark.slowSpells(sentMs: sent, latenciesMs: sent.map { _ in 5 }) == "slow spells: no update took over 30 ms")
    }

    /// The executable `swift build`/`swift test` built next to this test bundle.
    static var executable: URL {
        get throws {
            let candidates = [
                Bundle.main.bundleURL.appendingPathComponent("tributary"),
                Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("tributary"),
                URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                    .appendingPathComponent(".build/debug/tributary"),
            ]
            return try #require(candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }, "tributary executable not built")
        }
    }

    /// Starts `tributary` with `arguments` and a clean environment plus `environment`.
    static func launch(_ arguments: [String], environment: [String: String] = [:]) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = try executable
        process.arguments = arguments
        process.environment = ["PATH": "/usr/bin:/bin"].merging(environment) { $1 }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        return (process, output)
    }

    /// Waits for `process` to exit (terminating it after `timeout`) and returns its status and output.
    /// Foundation's `Process` has been seen never to notice a child's exit here (it stayed
    /// "running" and `waitUntilExit` hung the whole suite), so the child is also reaped with
    /// `waitpid` directly, and nothing waits without a bound.
    static func finish(_ process: Process, _ output: Pipe, within timeout: Duration = .seconds(30)) async throws -> (Int32, String) {
        let pid = process.processIdentifier
        var reaped: Int32?
        func exited() -> Bool {
            if reaped != nil || !process.isRunning { return true }
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                let signal = status & 0x7F
                reaped = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
                return true
            }
            return result < 0 && errno == ECHILD
        }
        let deadline = ContinuousClock.now + timeout
        while !exited(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        if !exited() { kill(pid, SIGTERM) }
        let killDeadline = ContinuousClock.now + .seconds(10)
        while !exited(), ContinuousClock.now < killDeadline { try await Task.sleep(for: .milliseconds(50)) }
        if !exited() { kill(pid, SIGKILL) }
        while !exited() { try await Task.sleep(for: .milliseconds(50)) }
        // Reaped by Foundation (ECHILD): give its monitor a moment to say so.
        let settle = ContinuousClock.now + .seconds(2)
        while reaped == nil, process.isRunning, ContinuousClock.now < settle { try await Task.sleep(for: .milliseconds(20)) }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        // `terminationStatus` may only be read once Foundation saw the exit itself.
        let status = reaped ?? (process.isRunning ? -1 : process.terminationStatus)
        return (status, text)
    }

    @Test func refusesAPublicAddressWithoutTokens() async throws {
        let (process, output) = try Self.launch(["serve", "--host", "0.0.0.0"])
        let (status, text) = try await Self.finish(process, output)
        #expect(status != 0)
        #expect(text.contains("refusing to serve on 0.0.0.0 without API tokens"))
        #expect(text.contains("--insecure-no-auth"))
    }

    @Test func refusesPostgreSQLWithoutAnEncryptionKeyAndNeverPrintsThePassword() async throws {
        let (process, output) = try Self.launch(["serve"], environment: ["DATABASE_URL": "postgres://etl:pw-not-to-print@127.0.0.1:1/etl"])
        let (status, text) = try await Self.finish(process, output)
        #expect(status != 0)
        #expect(text.contains("ENCRYPTION_KEY is required with PostgreSQL"))
        #expect(!text.contains("pw-not-to-print"))
    }

    /// The benches refuse sizes that would divide by zero or run nothing, naming the flag
    /// (`bench query --instruments 0` trapped on a modulo by zero before), and nothing is loaded or opened.
    @Test(arguments: [
        ["query", "--instruments", "0"], ["query", "--messages", "0"], ["query", "--span-days", "0"], ["query", "--repetitions", "0"],
        ["ingest", "--trades-per-frame", "0"], ["ingest", "--latency-rate", "0"], ["ingest", "--messages", "0"],
    ])
    func benchesRefuseSizesOutOfRange(_ arguments: [String]) async throws {
        let (process, output) = try Self.launch(["bench"] + arguments)
        let (status, text) = try await Self.finish(process, output)
        #expect(status == 64, "a usage error, not a trap: \(status)")
        #expect(text.contains("\(arguments[1]) must be"))
    }

    /// `simulate` refuses values out of range, naming the flag, before it listens.
    @Test(arguments: [("--coalesce-ms", "-1"), ("--coalesce-ms", "60001"), ("--rate", "-1"), ("--trades-per-frame", "0")])
    func simulateRefusesValuesOutOfRange(_ flag: String, _ value: String) async throws {
        let (process, output) = try Self.launch(["simulate", "--port", "0", "\(flag)=\(value)"])
        let (status, text) = try await Self.finish(process, output)
        #expect(status == 64, "a usage error, not a trap: \(status)")
        #expect(text.contains("\(flag) must be"), "\(text)")
    }

    @Test func keygenPrintsAUsableKey() async throws {
        let (process, output) = try Self.launch(["keygen"])
        let (status, text) = try await Self.finish(process, output)
        #expect(status == 0)
        #expect(
            Data(
                base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)
                    .replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            )?.count == 32
        )
    }

    @Test func servesThenShutsDownGracefullyOnSIGTERM() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tributary-cli-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (process, output) = try Self.launch(["serve", "--port", "0", "--data-dir", directory])
        // Reading the pipe blocks, so it happens on a dispatch thread, not a cooperative one.
        let text: String = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var text = ""
                let deadline = Date().addingTimeInterval(30)
                while !text.contains("Tributary is listening"), process.isRunning, Date() < deadline {
                    text += String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
                }
                continuation.resume(returning: text)
            }
        }
        #expect(text.contains("Tributary is listening"), "output: \(text)")
        process.terminate()  // SIGTERM
        let (status, rest) = try await Self.finish(process, output)
        #expect(status == 0, "exit status after SIGTERM; output: \(text + rest)")
        #expect(FileManager.default.fileExists(atPath: directory + "/tributary.sqlite"))
        #expect(FileManager.default.fileExists(atPath: directory + "/encryption.key"))
    }

    /// The README's configuration table: each row's variables (first cell) with their defaults
    /// (second cell, paired in order when a row lists several).
    static func configurationTable() throws -> [(variable: String, default: String)] {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("README.md")
        let text = try String(contentsOf: readme, encoding: .utf8)
        let section = try #require(text.components(separatedBy: "## Configuration").dropFirst().first?.components(separatedBy: "\n## ").first)
        var rows: [(String, String)] = []
        for line in section.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 2 else { continue }
            let variables = cells[0].split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "` ")) }
            let defaults = cells[1].split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "` ")) }
            for (index, variable) in variables.enumerated() {
                rows.append((variable, variables.count == defaults.count ? defaults[index] : ""))
            }
        }
        return rows
    }

    /// The naming rule: lower-case kebab case, without a leading `TRIBUTARY_`.
    static func flag(for variable: String) -> String {
        let name = variable.hasPrefix("TRIBUTARY_") ? String(variable.dropFirst("TRIBUTARY_".count)) : variable
        return name.lowercased().replacingOccurrences(of: "_", with: "-")
    }

    /// `serve`'s options as ArgumentParser describes them: long name → help text.
    static func serveOptions() async throws -> [String: String] {
        let (process, output) = try launch(["serve", "--experimental-dump-help"])
        let (status, text) = try await finish(process, output)
        #expect(status == 0)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let arguments = try #require((json["command"] as? [String: Any])?["arguments"] as? [[String: Any]])
        var options: [String: String] = [:]
        for argument in arguments {
            guard let names = argument["names"] as? [[String: Any]], let abstract = argument["abstract"] as? String else { continue }
            for name in names where name["kind"] as? String == "long" {
                if let long = name["name"] as? String { options[long] = abstract }
            }
        }
        return options
    }

    @Test func everyConfigurationVariableHasItsFlagWithHelpNamingIt() async throws {
        let table = try Self.configurationTable()
        #expect(table.count >= 35, "the README's configuration table was found")
        let options = try await Self.serveOptions()
        for (variable, _) in table {
            let flag = Self.flag(for: variable)
            #expect(options[flag] != nil, "\(variable) has no --\(flag)")
            #expect(options[flag]?.contains("(\(variable)") == true, "--\(flag)'s help names \(variable): \(options[flag] ?? "")")
        }
        // And the other way: every flag that stands for a variable is in the table.
        let documented = Set(table.map(\.variable))
        for (flag, help) in options {
            guard let open = help.firstIndex(of: "(") else { continue }
            let variable = String(help[help.index(after: open)...].prefix { $0.isUppercase || $0.isNumber || $0 == "_" })
            guard variable.count > 2 else { continue }
            #expect(documented.contains(variable), "--\(flag) (\(variable)) is missing from the README's configuration table")
        }
    }

    /// Each numeric setting's flag reaches the setting: a value that is not a number is refused
    /// with an error naming the variable (checked through `migrate`, which stops at the configuration).
    @Test func numericFlagsReachTheirSettings() async throws {
        let numeric = try Self.configurationTable().filter { !$0.default.isEmpty && $0.default.allSatisfy(\.isNumber) }
        #expect(numeric.count >= 20)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tributary-flags-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for (variable, _) in numeric {
            let (process, output) = try Self.launch(
                ["migrate", "--\(Self.flag(for: variable))", "not-a-number"],
                environment: ["TRIBUTARY_DATA_DIR": directory]
            )
            let (status, text) = try await Self.finish(process, output)
            #expect(status != 0 && text.contains(variable), "--\(Self.flag(for: variable)) not-a-number: \(text)")
        }
    }

    /// `tributary backup` copies the SQLite database while a server writes to it, with the
    /// generated key: a server started on the copy has the connector and can still read its secret.
    @Test func backupCopiesTheDatabaseAndKeyWhileTheServerRuns() async throws {
        let backup = FileManager.default.temporaryDirectory.appendingPathComponent("tributary-backup-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: backup) }
        try await TestBackend.sqlite.withConfig { base in
            var generated = base
            generated.encryptionKey = nil  // generated into the data directory, as a plain `serve` does
            let config = generated
            try await TestServer(config: config).run { client in
                let body = connectorBody("backed-up", ["auth_type": "api_key", "api_key": "key-to-keep-0123456789"])
                #expect(try await client.json(.post, "/api/connectors", body: body).status == .ok)
                let (process, output) = try Self.launch(["backup", "--data-dir", config.dataDirectory, "--to", backup])
                let (status, text) = try await Self.finish(process, output)
                #expect(status == 0, "\(text)")
                #expect(text.contains("wrote \(backup)/tributary.sqlite") && text.contains("wrote \(backup)/encryption.key"), "\(text)")
                // A second backup into the same place is refused rather than overwriting it.
                let (again, againOutput) = try Self.launch(["backup", "--data-dir", config.dataDirectory, "--to", backup])
                let (againStatus, againText) = try await Self.finish(again, againOutput)
                #expect(againStatus != 0 && againText.contains("exists already"))
            }
            var restored = config
            restored.dataDirectory = backup
            restored.database = .sqlite(path: backup + "/tributary.sqlite")
            try await TestServer(config: restored).run { client in
                let listed = try await client.json(.get, "/api/connectors").body["data"]?.arrayValue ?? []
                #expect(listed.count == 1 && listed.first?["name"] == "backed-up")
                #expect(listed.first?["api_key"] == "****6789", "the copied key still decrypts the secret")
            }
        }
    }
}
