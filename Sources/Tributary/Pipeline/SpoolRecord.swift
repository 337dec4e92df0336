import CTributaryCRC
import Foundation
import Synchronization

/// One accepted message as the spool keeps it: the payload of a spool record.
///
/// Layout (little-endian): kind, flags, `received_at` in microseconds (Int64), then connector
/// id, session id, source id and the stored `data` JSON, each as a UInt32 length and its UTF-8
/// bytes. Kind `3` (written since 2026-12-03) goes on with the message's columns, so reading it
/// back parses no JSON but its extra `fields`: exchange, channel, message type, instrument,
/// symbol, price, quantity and side as strings (length `0xFFFFFFFF` for none), a presence byte
/// and the exchange time in milliseconds, and `fields` as a JSON object (empty for none). Kind
/// `1`, what earlier versions wrote, has only `data`, and its columns are parsed from it.
enum SpoolRecord {
    /// A message whose columns are read back from `data` (written by earlier versions).
    static let kindMessage: UInt8 = 1
    /// A message with its columns after `data` (what `encode` writes).
    static let kindMessageColumns: UInt8 = 3
    /// A REST poll result (`api_connector_data` row), in the poll-row spool.
    static let kindPollRow: UInt8 = 2
    /// Flag: when written, the message was also held in memory (a copy for crash recovery), so a
    /// live reader skips it; recovery at start replays it.
    static let flagHeldInMemory: UInt8 = 1
    /// Flag: already sent to realtime clients (`"persisted": false`); not sent again once stored.
    static let flagAnnounced: UInt8 = 2

    static func encode(_ message: PendingMessage, flags: UInt8, into output: inout [UInt8]) {
        output.append(kindMessageColumns)
        output.append(flags | (message.announced.load(ordering: .relaxed) ? flagAnnounced : 0))
        appendInteger(UInt64(bitPattern: Timestamp.microseconds(message.receivedAt)), to: &output)
        appendString(message.connectorID, to: &output)
        appendString(message.sessionID, to: &output)
        appendString(message.sourceID, to: &output)
        appendString(message.data, to: &output)
        let columns = message.message
        appendString(columns.exchange.rawValue, to: &output)
        appendString(columns.channel, to: &output)
        appendString(columns.messageType.rawValue, to: &output)
        appendOptionalString(columns.instrument, to: &output)
        appendOptionalString(columns.symbol, to: &output)
        appendOptionalString(columns.price, to: &output)
        appendOptionalString(columns.quantity, to: &output)
        appendOptionalString(columns.side, to: &output)
        output.append(columns.exchangeTimestampMs == nil ? 0 : 1)
        appendInteger(UInt64(bitPattern: columns.exchangeTimestampMs ?? 0), to: &output)
        if columns.fields.isEmpty {
            appendUInt32(0, to: &output)
        } else {
            var fields: [UInt8] = []
            JSONValue.object(columns.fields).write(to: &fields)
            appendUInt32(UInt32(truncatingIfNeeded: fields.count), to: &output)
            output.append(contentsOf: fields)
        }
    }

    /// The flags byte and received time of a payload, without decoding the rest.
    static func header(_ payload: UnsafeRawBufferPointer) -> (flags: UInt8, receivedAtMicros: Int64)? {
        guard payload.count >= 10 else { return nil }
        switch payload[0] {
        case kindMessage, kindMessageColumns, kindPollRow: break
        default: return nil
        }
        var micros: UInt64 = 0
        for index in 0..<8 { micros |= UInt64(payload[2 + index]) << (8 * index) }
        return (payload[1], Int64(bitPattern: micros))
    }

    /// The message of a payload; throws when the payload is not one `encode` wrote.
    static func decode(_ payload: UnsafeRawBufferPointer) throws(SpoolCorruption) -> PendingMessage {
        var reader = ByteReader(bytes: payload, index: 0)
        let kind = try reader.byte()
        guard kind == kindMessage || kind == kindMessageColumns else { throw SpoolCorruption("unknown record kind") }
        let flags = try reader.byte()
        let micros = Int64(bitPattern: try reader.integer())
        let connectorID = try reader.string()
        let sessionID = try reader.string()
        let sourceID = try reader.string()
        let data = try reader.string()
        let message = kind == kindMessage ? try marketMessage(data: data) : try reader.columns()
        guard reader.index == payload.count else { throw SpoolCorruption("record longer than its fields") }
        return PendingMessage(
            connectorID: connectorID,
            sessionID: sessionID,
            sourceID: sourceID,
            message: message,
            receivedAt: Date(timeIntervalSince1970: Double(micros) / 1_000_000),
            data: data,
            announced: flags & flagAnnounced != 0
        )
    }

    static func encode(_ row: APIDataRow, into output: inout [UInt8]) {
        output.append(kindPollRow)
        output.append(0)
        appendInteger(UInt64(bitPattern: Timestamp.microseconds(row.timestamp)), to: &output)
        appendString(row.connectorID, to: &output)
        appendString(row.sourceID, to: &output)
        appendString(row.sessionID, to: &output)
        appendInteger(UInt64(bitPattern: Int64(row.statusCode)), to: &output)
        appendInteger(row.responseTimeMs.bitPattern, to: &output)
        appendString(row.data, to: &output)
        appendString(row.rawResponse, to: &output)
    }

    static func decodePollRow(_ payload: UnsafeRawBufferPointer) throws(SpoolCorruption) -> APIDataRow {
        var reader = ByteReader(bytes: payload, index: 0)
        guard try reader.byte() == kindPollRow else { throw SpoolCorruption("not a poll row") }
        _ = try reader.byte()
        let micros = Int64(bitPattern: try reader.integer())
        let connectorID = try reader.string()
        let sourceID = try reader.string()
        let sessionID = try reader.string()
        let status = Int64(bitPattern: try reader.integer())
        let responseTime = Double(bitPattern: try reader.integer())
        let data = try reader.string()
        let raw = try reader.string()
        guard reader.index == payload.count, (0...999).contains(status), responseTime.isFinite else {
            throw SpoolCorruption("poll row out of range")
        }
        return APIDataRow(
            connectorID: connectorID,
            data: data,
            rawResponse: raw,
            statusCode: Int(status),
            responseTimeMs: responseTime,
            sourceID: sourceID,
            sessionID: sessionID,
            timestamp: Date(timeIntervalSince1970: Double(micros) / 1_000_000)
        )
    }

    /// The message whose `serializedJSON` is `data`.
    static func marketMessage(data: String) throws(SpoolCorruption) -> MarketMessage {
        let object: JSONObject
        do {
            guard let parsed = try JSONValue.parse(data).objectValue else { throw SpoolCorruption("data is not an object") }
            object = parsed
        } catch let error as SpoolCorruption {
            throw error
        } catch {
            throw SpoolCorruption("data is not JSON: \(error)")
        }
        guard let exchange = object["exchange"]?.stringValue.flatMap(Exchange.init(rawValue:)),
            let channel = object["channel"]?.stringValue,
            let type = object["message_type"]?.stringValue.flatMap(MessageType.init(rawValue:))
        else { throw SpoolCorruption("data lacks exchange, channel or message_type") }
        var fields = JSONObject()
        for (key, value) in object where !Self.members.contains(key) { fields[key] = value }
        var exchangeTime: Int64?
        if case .number(let text) = object["exchange_timestamp_ms"] { exchangeTime = Int64(text) }
        return MarketMessage(
            exchange: exchange,
            channel: channel,
            messageType: type,
            instrument: object["instrument"]?.stringValue,
            symbol: object["symbol"]?.stringValue,
            price: object["price"]?.stringValue,
            quantity: object["quantity"]?.stringValue,
            side: object["side"]?.stringValue,
            exchangeTimestampMs: exchangeTime,
            fields: fields,
            raw: .null
        )
    }

    /// The members `MarketMessage.writeMembers` writes, and `raw`: everything that is not `fields`.
    static let members: Set<String> = [
        "exchange", "channel", "message_type", "instrument", "symbol", "price", "quantity", "side", "exchange_timestamp_ms", "raw",
    ]

    static func appendInteger(_ value: UInt64, to output: inout [UInt8]) {
        for index in 0..<8 { output.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }

    static func appendUInt32(_ value: UInt32, to output: inout [UInt8]) {
        for index in 0..<4 { output.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }

    /// `text`, or for none the length `0xFFFFFFFF` alone.
    static func appendOptionalString(_ text: String?, to output: inout [UInt8]) {
        guard let text else { return appendUInt32(.max, to: &output) }
        appendString(text, to: &output)
    }

    static func appendString(_ text: String, to output: inout [UInt8]) {
        var text = text
        text.withUTF8 { bytes in
            appendUInt32(UInt32(truncatingIfNeeded: bytes.count), to: &output)
            output.append(contentsOf: bytes)
        }
    }

    struct ByteReader {
        let bytes: UnsafeRawBufferPointer
        var index: Int

        mutating func byte() throws(SpoolCorruption) -> UInt8 {
            guard index < bytes.count else { throw SpoolCorruption("record ends early") }
            defer { index += 1 }
            return bytes[index]
        }

        mutating func uint32() throws(SpoolCorruption) -> UInt32 { try little(UInt32.self) }

        mutating func integer() throws(SpoolCorruption) -> UInt64 { try little(UInt64.self) }

        /// A little-endian unsigned integer of `Value`'s width.
        mutating func little<Value: FixedWidthInteger & UnsignedInteger>(_: Value.Type) throws(SpoolCorruption) -> Value {
            let width = Value.bitWidth / 8
            guard bytes.count - index >= width else { throw SpoolCorruption("record ends early") }
            var value: Value = 0
            for offset in 0..<width { value |= Value(bytes[index + offset]) << (8 * offset) }
            index += width
            return value
        }

        mutating func string() throws(SpoolCorruption) -> String {
            let length = Int(try uint32())
            guard bytes.count - index >= length else { throw SpoolCorruption("string longer than its record") }
            defer { index += length }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[index..<(index + length)]), as: UTF8.self)
        }

        /// A string `appendOptionalString` wrote.
        mutating func optionalString() throws(SpoolCorruption) -> String? {
            guard bytes.count - index >= 4 else { throw SpoolCorruption("record ends early") }
            if bytes[index..<(index + 4)].allSatisfy({ $0 == 0xFF }) {
                index += 4
                return nil
            }
            return try string()
        }

        /// The message columns of a `kindMessageColumns` record (after its `data`).
        mutating func columns() throws(SpoolCorruption) -> MarketMessage {
            guard let exchange = Exchange(rawValue: try string()) else { throw SpoolCorruption("unknown exchange") }
            let channel = try string()
            guard let type = MessageType(rawValue: try string()) else { throw SpoolCorruption("unknown message type") }
            let instrument = try optionalString()
            let symbol = try optionalString()
            let price = try optionalString()
            let quantity = try optionalString()
            let side = try optionalString()
            let hasExchangeTime = try byte()
            let exchangeTime = Int64(bitPattern: try integer())
            guard hasExchangeTime <= 1 else { throw SpoolCorruption("exchange time flag out of range") }
            let fieldsLength = Int(try uint32())
            guard bytes.count - index >= fieldsLength else { throw SpoolCorruption("fields longer than their record") }
            var fields = JSONObject()
            if fieldsLength > 0 {
                let text = UnsafeBufferPointer(rebasing: bytes.assumingMemoryBound(to: UInt8.self)[index..<(index + fieldsLength)])
                guard let object = (try? JSONValue.parse(text))?.objectValue else { throw SpoolCorruption("fields are not a JSON object") }
                fields = object
                index += fieldsLength
            }
            return MarketMessage(
                exchange: exchange,
                channel: channel,
                messageType: type,
                instrument: instrument,
                symbol: symbol,
                price: price,
                quantity: quantity,
                side: side,
                exchangeTimestampMs: hasExchangeTime == 1 ? exchangeTime : nil,
                fields: fields,
                raw: .null
            )
        }
    }
}

/// A spool file or record that is not what Tributary wrote (a torn write, a damaged disk).
struct SpoolCorruption: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) { self.description = description }
}

/// CRC-32C (Castagnoli), the checksum of every spool record: with the CPU's instruction where
/// there is one (`CTributaryCRC`), else slicing by 8 bytes.
enum CRC32C {
    static let hardware = tributary_crc32c_hardware() == 1

    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard hardware, let start = bytes.baseAddress else { return tableChecksum(bytes) }
        return tributary_crc32c_update(0xFFFF_FFFF, start, bytes.count) ^ 0xFFFF_FFFF
    }

    static let tables: [[UInt32]] = {
        var tables = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for byte in 0..<256 {
            var crc = UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            tables[0][byte] = crc
        }
        for byte in 0..<256 {
            for table in 1..<8 {
                let previous = tables[table - 1][byte]
                tables[table][byte] = (previous >> 8) ^ tables[0][Int(previous & 0xFF)]
            }
        }
        return tables
    }()

    /// Without the CPU's instruction.
    static func tableChecksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        tables.withUnsafeBufferPointer { tables in
            let t0 = tables[0]
            let t1 = tables[1]
            let t2 = tables[2]
            let t3 = tables[3]
            let t4 = tables[4]
            let t5 = tables[5]
            let t6 = tables[6]
            let t7 = tables[7]
            var index = 0
            let count = bytes.count
            while count - index >= 8 {
                let low =
                    crc ^ (UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2]) << 16 | UInt32(bytes[index + 3]) << 24)
                crc =
                    t7[Int(low & 0xFF)] ^ t6[Int((low >> 8) & 0xFF)] ^ t5[Int((low >> 16) & 0xFF)] ^ t4[Int(low >> 24)]
                    ^ t3[Int(bytes[index + 4])] ^ t2[Int(bytes[index + 5])] ^ t1[Int(bytes[index + 6])] ^ t0[Int(bytes[index + 7])]
                index += 8
            }
            while index < count {
                crc = (crc >> 8) ^ t0[Int((crc ^ UInt32(bytes[index])) & 0xFF)]
                index += 1
            }
        }
        return crc ^ 0xFFFF_FFFF
    }
}
