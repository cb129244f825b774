import Foundation

/// Calendar arithmetic in UTC on the proleptic Gregorian calendar, done by hand.
///
/// Foundation's Calendar, DateFormatter, ISO8601DateFormatter and even FoundationEssentials'
/// ISO 8601 style reach ICU for the current time zone, and ICU's data then stays resident in the
/// agent (about 4 MiB of an idle agent's 68). What sfnode writes and reads (HTTP dates, ISO 8601
/// timestamps, ISO 9660 dates) is always UTC, so these few lines do instead.
public struct UTCTime: Equatable, Sendable {
    public var year: Int
    public var month: Int
    public var day: Int
    public var hour: Int
    public var minute: Int
    public var second: Int
    /// Thousandths of a second.
    public var millisecond: Int

    /// The instants the fields can hold: 0001-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z, in
    /// milliseconds from the epoch.
    static let representable: ClosedRange<Double> = -62_135_596_800_000 ... 253_402_300_799_999

    /// The UTC fields of `date` (milliseconds rounded down); a date outside years 1 to 9999 reads
    /// as the nearest end of them (and one that is not a number as the epoch), never a trap.
    public init(_ date: Date) {
        let raw = (date.timeIntervalSince1970 * 1000).rounded(.down)
        let milliseconds = raw.isNaN ? 0 : Int(min(max(raw, Self.representable.lowerBound), Self.representable.upperBound))
        let seconds = milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let inDay = seconds - days * 86_400
        // H. Hinnant's civil_from_days.
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        hour = inDay / 3600
        minute = inDay % 3600 / 60
        second = inDay % 60
        millisecond = milliseconds - seconds * 1000
    }

    /// The fields given, when they name a real instant (a leap second reads as the next one); nil
    /// when any is out of range.
    public init?(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, millisecond: Int = 0) {
        guard (1...9999).contains(year), (1...12).contains(month), (1...Self.days(inMonth: month, year: year)).contains(day),
            (0...23).contains(hour), (0...59).contains(minute), (0...60).contains(second), (0...999).contains(millisecond)
        else { return nil }
        (self.year, self.month, self.day) = (year, month, day)
        (self.hour, self.minute, self.second, self.millisecond) = (hour, minute, second, millisecond)
    }

    /// The instant.
    public var date: Date {
        // H. Hinnant's days_from_civil.
        let shiftedYear = month <= 2 ? year - 1 : year
        let era = (shiftedYear >= 0 ? shiftedYear : shiftedYear - 399) / 400
        let yearOfEra = shiftedYear - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second
        return Date(timeIntervalSince1970: TimeInterval(seconds) + TimeInterval(millisecond) / 1000)
    }

    /// `2026-12-07T13:45:00Z`, or with `milliseconds` `2026-12-07T13:45:00.123Z`.
    public func iso8601(milliseconds: Bool = false) -> String {
        var text = Self.padded(year, 4) + "-" + Self.padded(month, 2) + "-" + Self.padded(day, 2) + "T"
        text += Self.padded(hour, 2) + ":" + Self.padded(minute, 2) + ":" + Self.padded(second, 2)
        if milliseconds { text += "." + Self.padded(millisecond, 3) }
        return text + "Z"
    }

    /// `20261207134500`: the fields to the second, each zero-padded, nothing between them.
    public func digits() -> String {
        Self.padded(year, 4) + Self.padded(month, 2) + Self.padded(day, 2) + Self.padded(hour, 2)
            + Self.padded(minute, 2) + Self.padded(second, 2)
    }

    /// `date` as ``iso8601(milliseconds:)`` writes it.
    public static func iso8601(_ date: Date, milliseconds: Bool = false) -> String {
        UTCTime(date).iso8601(milliseconds: milliseconds)
    }

    public static func days(inMonth month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    private static func padded(_ value: Int, _ width: Int) -> String {
        let text = String(value)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}
