import Foundation
import SFSystem
import Testing

@Suite("UTC dates by hand, as Foundation's ICU-backed formatter writes them")
struct UTCTimeTests {
    @Test("fields and ISO 8601 text agree with ISO8601DateFormatter from 1601 to 9999, leap days included")
    func agreesWithFoundation() throws {
        let formatter = ISO8601DateFormatter()
        var generator = SystemRandomNumberGenerator()
        var instants: [TimeInterval] = [0, -1, 951_782_400, 951_868_799, 4_107_542_400, -11_644_473_600, 253_402_300_799]
        for _ in 0..<2000 { instants.append(TimeInterval(Int64.random(in: -11_644_473_600...253_402_300_799, using: &generator))) }
        for seconds in instants {
            let date = Date(timeIntervalSince1970: seconds)
            let time = UTCTime(date)
            #expect(time.iso8601() == formatter.string(from: date), "\(seconds)")
            let back = try #require(UTCTime(year: time.year, month: time.month, day: time.day, hour: time.hour, minute: time.minute, second: time.second))
            #expect(back.date == date, "\(seconds)")
        }
        #expect(UTCTime.iso8601(Date(timeIntervalSince1970: 1_796_637_600.1239), milliseconds: true) == "2026-12-07T10:00:00.123Z")
        #expect(UTCTime(Date(timeIntervalSince1970: 1_796_637_600)).digits() == "20261207100000")
    }

    @Test("a date beyond years 1 to 9999, or not a number, reads as the nearest end rather than trapping")
    func outOfRange() {
        #expect(UTCTime.iso8601(Date(timeIntervalSince1970: 1e300), milliseconds: true) == "9999-12-31T23:59:59.999Z")
        #expect(UTCTime.iso8601(Date(timeIntervalSince1970: -1e300)) == "0001-01-01T00:00:00Z")
        #expect(UTCTime.iso8601(Date(timeIntervalSince1970: .infinity)) == "9999-12-31T23:59:59Z")
        #expect(UTCTime.iso8601(Date(timeIntervalSince1970: .nan)) == "1970-01-01T00:00:00Z")
    }

    @Test("fields that name no instant are refused")
    func refused() {
        #expect(UTCTime(year: 2026, month: 2, day: 29, hour: 0, minute: 0, second: 0) == nil)
        #expect(UTCTime(year: 2028, month: 2, day: 29, hour: 0, minute: 0, second: 0) != nil)
        #expect(UTCTime(year: 1900, month: 2, day: 29, hour: 0, minute: 0, second: 0) == nil)
        #expect(UTCTime(year: 2000, month: 2, day: 29, hour: 0, minute: 0, second: 0) != nil)
        #expect(UTCTime(year: 2026, month: 13, day: 1, hour: 0, minute: 0, second: 0) == nil)
        #expect(UTCTime(year: 2026, month: 4, day: 31, hour: 0, minute: 0, second: 0) == nil)
        #expect(UTCTime(year: 2026, month: 1, day: 1, hour: 24, minute: 0, second: 0) == nil)
        #expect(UTCTime(year: 0, month: 1, day: 1, hour: 0, minute: 0, second: 0) == nil)
        #expect(UTCTime(year: Int.max, month: 1, day: 1, hour: 0, minute: 0, second: 0) == nil)
    }
}
