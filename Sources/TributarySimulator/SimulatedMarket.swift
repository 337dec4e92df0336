import Foundation
import Tributary

/// The trades the fake exchange sends: for each venue and instrument a seeded random walk in
/// ticks of the instrument's tick size around its own price level, taker sides in runs, sizes from
/// a heavy-tailed (Pareto) distribution in whole lots, and trade ids in sequence.
///
/// Reproducible: with the same seed, trade *n* of an instrument on a venue always has the same
/// price, size and side, however connections come and go. The venues of one instrument follow one
/// walk (its steps depend on the seed and the instrument only) and differ by a tick or two of
/// their own noise and by their sizes, so the OKX and Binance charts of BTC-USDT agree as real
/// ones do. Prices and sizes are built from integers as decimal strings; no price is a Double.
struct SimulatedMarket: Sendable {
    let seed: UInt64
    private var walks: [Key: Walk] = [:]

    init(seed: UInt64) { self.seed = seed }

    struct Key: Hashable, Sendable {
        let venue: FakeVenue
        let instrument: String
    }

    /// The next trade of `instrument` on `venue`.
    mutating func next(_ venue: FakeVenue, _ instrument: String) -> SimulatedTrade {
        let key = Key(venue: venue, instrument: instrument)
        var walk = walks[key] ?? Walk(seed: seed, venue: venue, instrument: instrument)
        let trade = walk.step()
        walks[key] = walk
        return trade
    }

    /// The last trade id sent per venue and instrument.
    var lastIDs: [Key: Int] { walks.mapValues { $0.nextID - 1 } }

    /// One venue's trades of one instrument.
    struct Walk: Sendable {
        let profile: InstrumentProfile
        /// Shared by every venue of the instrument: sides and price steps.
        var market: SplitMix64
        /// This venue's own: its price noise and trade sizes.
        var venue: SplitMix64
        var priceTicks: Int64
        var buying = true
        var nextID = 1

        init(seed: UInt64, venue: FakeVenue, instrument: String) {
            profile = InstrumentProfile(instrument, seed: seed)
            market = SplitMix64(seed: seed ^ fnv1a(instrument))
            self.venue = SplitMix64(seed: seed ^ fnv1a(venue.rawValue + "/" + instrument))
            priceTicks = profile.levelTicks
        }

        mutating func step() -> SimulatedTrade {
            // Takers come in runs: the side changes one trade in four.
            if market.unit() < 0.25 { buying.toggle() }
            // A Gaussian step, pushed the way the taker trades and pulled back towards the level
            // so the price wanders for hours without drifting away.
            let sigma = Double(profile.sigmaTicks)
            let push = buying ? 0.35 * sigma : -0.35 * sigma
            let pull = Double(priceTicks - profile.levelTicks) * 0.0002
            let step = (market.gaussian() * sigma + push - pull).rounded()
            priceTicks = max(profile.levelTicks / 4, min(profile.levelTicks * 4, priceTicks + Int64(step)))
            // This venue's print: within a tick or two of the shared price.
            let noise = Int64(venue.next() % 5) - 2
            let printed = max(1, priceTicks + noise)
            // Pareto sizes (alpha 1.3): mostly the minimum, now and then a block hundreds of times larger.
            // Capped as a Double, so no draw can reach a conversion that traps.
            let minimum = Double(profile.minimumLots)
            let lots = Int64(min(minimum * 20_000, (minimum / pow(venue.unit(open: true), 1 / 1.3)).rounded(.down)))
            let trade = SimulatedTrade(
                id: nextID,
                price: decimalString(printed, scale: profile.tickScale),
                quantity: decimalString(max(profile.minimumLots, lots), scale: profile.lotScale),
                side: buying ? .buy : .sell
            )
            nextID += 1
            return trade
        }
    }
}

/// The venues the fake exchange speaks for.
enum FakeVenue: String, Sendable, CaseIterable {
    case okx, binance, bybit, coinbase, kraken

    /// How the venue writes `BASE-QUOTE`.
    func symbol(_ instrument: String) -> String {
        switch self {
        case .okx, .coinbase: instrument
        case .binance: String(instrument.filter { $0 != "-" }).lowercased()
        case .bybit: String(instrument.filter { $0 != "-" })
        case .kraken: String(instrument.map { $0 == "-" ? "/" : $0 })
        }
    }
}

enum TakerSide: String, Sendable {
    case buy, sell
}

struct SimulatedTrade: Sendable {
    let id: Int
    let price: String
    let quantity: String
    let side: TakerSide
}

/// Price level, tick size, lot size and volatility of an instrument: a few known ones, and for
/// any other a level drawn from the seed and the name, with a tick about a ten-thousandth of it.
struct InstrumentProfile: Sendable {
    /// Decimals of the tick (tick = 10^-tickScale) and of the lot.
    let tickScale: Int
    let lotScale: Int
    let levelTicks: Int64
    let minimumLots: Int64
    /// Standard deviation of one trade's step, in ticks.
    let sigmaTicks: Int64

    init(_ instrument: String, seed: UInt64) {
        let base = instrument.split(separator: "-").first.map(String.init) ?? instrument
        switch base {
        case "BTC": (tickScale, lotScale, levelTicks, minimumLots, sigmaTicks) = (1, 5, 672_500, 10, 40)
        case "ETH": (tickScale, lotScale, levelTicks, minimumLots, sigmaTicks) = (2, 4, 348_000, 10, 20)
        case "SOL": (tickScale, lotScale, levelTicks, minimumLots, sigmaTicks) = (2, 3, 15_200, 10, 2)
        default:
            // A level from 1 to about 1,000 with four significant digits in ticks.
            var random = SplitMix64(seed: seed ^ fnv1a("level/" + instrument))
            let digits = Int(random.next() % 4)
            tickScale = 4 - digits
            lotScale = 2
            levelTicks = 1_000 + Int64(random.next() % 9_000)
            minimumLots = 100
            sigmaTicks = 2
        }
    }
}

/// `12345`, scale 2 → `123.45`; exact, from integers.
func decimalString(_ units: Int64, scale: Int) -> String {
    guard scale > 0 else { return String(units) }
    let digits = String(units.magnitude)
    let padded = String(repeating: "0", count: max(0, scale + 1 - digits.count)) + digits
    let split = padded.index(padded.endIndex, offsetBy: -scale)
    return (units < 0 ? "-" : "") + padded[..<split] + "." + padded[split...]
}

/// SplitMix64 (Steele, Lea and Flood): small, fast, and the same sequence on every platform.
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1), or (0, 1) with `open`.
    mutating func unit(open: Bool = false) -> Double {
        let value = Double(next() >> 11) / Double(1 << 53)
        return open && value == 0 ? 0.5 / Double(1 << 53) : value
    }

    /// Standard normal (Box–Muller).
    mutating func gaussian() -> Double {
        let u = unit(open: true)
        let v = unit()
        return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
    }
}
