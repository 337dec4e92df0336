/// A small JSONPath subset for `field_mapping`: `$.data[0].px`, `$['key with space']`, `$.a.b`.
public struct JSONPath: Sendable, Equatable {
    enum Step: Sendable, Equatable {
        case key(String)
        case index(Int)
    }

    let steps: [Step]

    /// Parses a path; `nil` when it is not of the supported form.
    public init?(_ text: String) {
        var rest = Substring(text)
        guard rest.hasPrefix("$") else { return nil }
        rest = rest.dropFirst()
        var steps: [Step] = []
        while !rest.isEmpty {
            if rest.hasPrefix(".") {
                rest = rest.dropFirst()
                let key = rest.prefix { $0 != "." && $0 != "[" }
                guard !key.isEmpty else { return nil }
                steps.append(.key(String(key)))
                rest = rest.dropFirst(key.count)
            } else if rest.hasPrefix("['") {
                rest = rest.dropFirst(2)
                guard let quote = rest.firstIndex(of: "'"), rest[quote...].hasPrefix("']") else { return nil }
                steps.append(.key(String(rest[..<quote])))
                rest = rest[quote...].dropFirst(2)
            } else if rest.hasPrefix("[") {
                rest = rest.dropFirst()
                let digits = rest.prefix { $0.isNumber }
                guard let index = Int(digits), rest.dropFirst(digits.count).hasPrefix("]") else { return nil }
                steps.append(.index(index))
                rest = rest.dropFirst(digits.count + 1)
            } else {
                return nil
            }
        }
        self.steps = steps
    }

    /// The value at this path, `nil` when any step is missing.
    public func evaluate(_ value: JSONValue) -> JSONValue? {
        var current = value
        for step in steps {
            switch step {
            case .key(let key):
                guard let next = current[key] else { return nil }
                current = next
            case .index(let index):
                guard let next = current[index] else { return nil }
                current = next
            }
        }
        return current
    }
}
