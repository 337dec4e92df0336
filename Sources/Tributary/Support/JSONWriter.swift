extension JSONValue {
    /// Compact JSON text; object members in their stored order, numbers as their exact text.
    public var serialized: String {
        var output: [UInt8] = []
        output.reserveCapacity(128)
        write(to: &output)
        return String(decoding: output, as: UTF8.self)
    }

    /// Appends the compact JSON text of this value to `output`.
    public func write(to output: inout [UInt8]) {
        switch self {
        case .null: output.append(contentsOf: "null".utf8)
        case .bool(let value): output.append(contentsOf: (value ? "true" : "false").utf8)
        case .number(let text): output.append(contentsOf: text.utf8)
        case .string(let text): JSONValue.writeString(text, to: &output)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (position, element) in elements.enumerated() {
                if position > 0 { output.append(UInt8(ascii: ",")) }
                element.write(to: &output)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let object):
            output.append(UInt8(ascii: "{"))
            for (position, member) in object.members.enumerated() {
                if position > 0 { output.append(UInt8(ascii: ",")) }
                JSONValue.writeString(member.key, to: &output)
                output.append(UInt8(ascii: ":"))
                member.value.write(to: &output)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    /// Appends the compact JSON text of this value with the members of every object in `jsonb`
    /// key order (see `JSONValue.keyPrecedes`), the order PostgreSQL stores them in.
    func writeInKeyOrder(to output: inout [UInt8]) {
        switch self {
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (position, element) in elements.enumerated() {
                if position > 0 { output.append(UInt8(ascii: ",")) }
                element.writeInKeyOrder(to: &output)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let object): JSONValue.writeInKeyOrder(object.members, to: &output)
        case .null, .bool, .number, .string: write(to: &output)
        }
    }

    /// Writes an object of `members` (distinct keys) in `jsonb` key order, nested objects too.
    /// The order is sorted as positions on the stack: no copy of the members.
    static func writeInKeyOrder(_ members: [(key: String, value: JSONValue)], to output: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: members.count) { buffer in
            var order = buffer
            for position in order.indices { order.initializeElement(at: position, to: position) }
            if !members.indices.dropFirst().allSatisfy({ keyPrecedes(members[$0 - 1].key, members[$0].key) }) {
                order.sort { keyPrecedes(members[$0].key, members[$1].key) }
            }
            output.append(UInt8(ascii: "{"))
            for (count, position) in order.enumerated() {
                if count > 0 { output.append(UInt8(ascii: ",")) }
                JSONValue.writeString(members[position].key, to: &output)
                output.append(UInt8(ascii: ":"))
                members[position].value.writeInKeyOrder(to: &output)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    /// PostgreSQL's `jsonb` key order: the shorter key first, keys of one length by their UTF-8
    /// bytes. `jsonb` sorts every object it parses into this order; a `COPY` of text already in
    /// it took about a quarter less time (see "Benchmark" in the README).
    static func keyPrecedes(_ first: String, _ second: String) -> Bool {
        let (firstCount, secondCount) = (first.utf8.count, second.utf8.count)
        if firstCount != secondCount { return firstCount < secondCount }
        return first.utf8.lexicographicallyPrecedes(second.utf8)
    }

    static let hexDigits = Array("0123456789abcdef".utf8)

    /// Writes `text` as a JSON string, copying runs that need no escaping in bulk.
    static func writeString(_ text: String, to output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { bytes in
            var runStart = 0
            // Eight bytes at a time past runs with nothing to escape.
            var index = 0
            while bytes.count - index >= 8 {
                let word = WordScan.word(bytes, at: index)
                guard !WordScan.has(word, lessThan: 0x20), !WordScan.has(word, byte: UInt8(ascii: "\"")),
                    !WordScan.has(word, byte: UInt8(ascii: "\\"))
                else { break }
                index += 8
            }
            for index in index..<bytes.count {
                let byte = bytes[index]
                guard byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 else { continue }
                output.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                runStart = index + 1
                switch byte {
                case UInt8(ascii: "\""): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
                case UInt8(ascii: "\\"): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
                case 0x0A: output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
                case 0x0D: output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
                case 0x09: output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
                default:
                    output.append(contentsOf: "\\u00".utf8)
                    output.append(hexDigits[Int(byte >> 4)])
                    output.append(hexDigits[Int(byte & 0x0F)])
                }
            }
            output.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<bytes.count]))
        }
        output.append(UInt8(ascii: "\""))
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByNilLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(integerLiteral value: Int) { self = .number(String(value)) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        var object = JSONObject()
        for (key, value) in elements { object[key] = value }
        self = .object(object)
    }
}

extension JSONValue {
    /// `.string` for a value, `.null` for nil.
    public static func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
}

/// Receives an object's members in order: `JSONObjectWriter` writes them straight to text,
/// `JSONObject` keeps them. A type that lists its members once, for both, writes through this.
protocol JSONMemberSink {
    /// A string member, `null` for nil.
    mutating func string(_ key: String, _ value: String?)
    /// A number member, kept as its exact text.
    mutating func number(_ key: String, _ text: String)
}

extension JSONObject: JSONMemberSink {
    mutating func string(_ key: String, _ value: String?) { self[key] = .optional(value) }
    mutating func number(_ key: String, _ text: String) { self[key] = .number(text) }
}

/// Collects one object's members and writes them in `jsonb` key order, nested objects too: the
/// stored `data` of every message, which PostgreSQL would otherwise sort on the way in. Members
/// of `overrides` (a message's extra fields) replace the same-named members.
struct JSONKeyOrderWriter: JSONMemberSink {
    private var members: [(key: String, value: JSONValue)] = []
    private let overrides: JSONObject

    init(overrides: JSONObject = [:]) {
        self.overrides = overrides
        members.reserveCapacity(12 + overrides.count)
    }

    mutating func string(_ key: String, _ value: String?) { members.append((key, .optional(value))) }
    mutating func number(_ key: String, _ text: String) { members.append((key, .number(text))) }

    consuming func finish() -> String {
        for member in overrides {
            if let position = members.firstIndex(where: { $0.key == member.key }) {
                members[position].value = member.value
            } else {
                members.append(member)
            }
        }
        var output: [UInt8] = []
        output.reserveCapacity(384)
        JSONValue.writeInKeyOrder(members, to: &output)
        return String(decoding: output, as: UTF8.self)
    }
}

/// Writes one JSON object straight to text, member by member: for the per-message hot paths
/// (realtime updates), where building a `JSONValue` tree first costs
/// more than the text itself. Members of `overrides` (a message's extra fields) replace the
/// same-named members where they stand and the rest follow at the end: the same text as
/// assigning them into a `JSONObject` after the others.
struct JSONObjectWriter: JSONMemberSink {
    private var output: [UInt8]
    private let overrides: JSONObject
    private var overridden: Set<String> = []
    private var first = true

    /// Starts the object after `prefix` (for an object nested in fixed text).
    init(after prefix: String = "", overrides: JSONObject = [:]) {
        output = Array(prefix.utf8)
        output.reserveCapacity(output.count + 384)
        output.append(UInt8(ascii: "{"))
        self.overrides = overrides
    }

    mutating func string(_ key: String, _ value: String?) {
        guard open(key) else { return }
        if let value { JSONValue.writeString(value, to: &output) } else { output.append(contentsOf: "null".utf8) }
    }

    mutating func number(_ key: String, _ text: String) {
        guard open(key) else { return }
        output.append(contentsOf: text.utf8)
    }

    mutating func bool(_ key: String, _ value: Bool) {
        guard open(key) else { return }
        output.append(contentsOf: (value ? "true" : "false").utf8)
    }

    /// Closes the object, after the overrides that replaced nothing, then appends `suffix`.
    consuming func finish(suffix: String = "") -> String {
        String(decoding: finishUTF8(suffix: suffix), as: UTF8.self)
    }

    /// `finish`'s text as UTF-8, without making a `String` of it.
    consuming func finishUTF8(suffix: String = "") -> [UInt8] {
        for member in overrides where !overridden.contains(member.key) { write(member.key, member.value) }
        output.append(UInt8(ascii: "}"))
        output.append(contentsOf: suffix.utf8)
        return output
    }

    /// Writes `key:` and returns true for the caller to write its value, or writes the override
    /// for `key` and returns false.
    private mutating func open(_ key: String) -> Bool {
        if !overrides.isEmpty, let replacement = overrides[key] {
            overridden.insert(key)
            write(key, replacement)
            return false
        }
        writeKey(key)
        return true
    }

    private mutating func write(_ key: String, _ value: JSONValue) {
        writeKey(key)
        value.write(to: &output)
    }

    /// `"key":`, after a comma unless it is the first member.
    private mutating func writeKey(_ key: String) {
        if first { first = false } else { output.append(UInt8(ascii: ",")) }
        JSONValue.writeString(key, to: &output)
        output.append(UInt8(ascii: ":"))
    }
}
