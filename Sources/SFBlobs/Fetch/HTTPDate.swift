import Foundation
import SFSystem

/// HTTP dates (RFC 9110 section 5.6.7), read without Foundation's DateFormatter, which loads
/// ICU's locale and calendar data into the agent for one header (``UTCTime``).
enum HTTPDate {
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    private static let weekdays = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    private static let longWeekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

    /// The date of `text` in any of the three forms a recipient must accept: IMF-fixdate
    /// (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form (`Sunday, 06-Nov-94 08:49:37 GMT`)
    /// and asctime's (`Sun Nov  6 08:49:37 1994`); nil for anything else, or an impossible date.
    static func parse(_ text: String) -> Date? {
        let fields = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        switch fields.count {
        case 6 where fields[5] == "GMT" && fields[0].hasSuffix(","):
            // IMF-fixdate: day, month and a four-digit year as separate fields.
            guard weekdays.contains(String(fields[0].dropLast())), let day = number(fields[1], width: 2...2),
                let month = months.firstIndex(of: fields[2]), let year = number(fields[3], width: 4...4)
            else { return nil }
            return date(year: year, month: month + 1, day: day, time: fields[4])
        case 4 where fields[3] == "GMT" && fields[0].hasSuffix(","):
            // RFC 850: a two-digit year, read as the 1900s from 70 on and the 2000s below.
            let parts = fields[1].split(separator: "-", omittingEmptySubsequences: false).map(String.init)
            guard longWeekdays.contains(String(fields[0].dropLast())), parts.count == 3, let day = number(parts[0], width: 2...2),
                let month = months.firstIndex(of: parts[1]), let shortYear = number(parts[2], width: 2...2)
            else { return nil }
            return date(year: shortYear + (shortYear >= 70 ? 1900 : 2000), month: month + 1, day: day, time: fields[2])
        case 5:
            // asctime: `Sun Nov  6 08:49:37 1994` (a day below 10 is padded with a space).
            guard weekdays.contains(fields[0]), let month = months.firstIndex(of: fields[1]),
                let day = number(fields[2], width: 1...2), let year = number(fields[4], width: 4...4)
            else { return nil }
            return date(year: year, month: month + 1, day: day, time: fields[3])
        default:
            return nil
        }
    }

    /// The UTC date of `year`-`month`-`day` at `time` (`HH:MM:SS`), or nil when any part is out of range.
    private static func date(year: Int, month: Int, day: Int, time: String) -> Date? {
        let clock = time.split(separator: ":", omittingEmptySubsequences: false)
        guard clock.count == 3, let hour = number(clock[0], width: 2...2), let minute = number(clock[1], width: 2...2),
            let second = number(clock[2], width: 2...2)
        else { return nil }
        return UTCTime(year: year, month: month, day: day, hour: hour, minute: minute, second: second)?.date
    }

    /// `text` as a number when it is `width` ASCII digits and nothing else (no sign, no space).
    private static func number(_ text: some StringProtocol, width: ClosedRange<Int>) -> Int? {
        guard width.contains(text.utf8.count), text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
        return Int(text)
    }
}
