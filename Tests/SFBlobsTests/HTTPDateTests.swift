import Foundation
import Testing

@testable import SFBlobs

@Suite("HTTP dates and URL hosts, read without ICU")
struct HTTPDateTests {
    @Test("the three forms RFC 9110 makes a recipient accept give the same instant")
    func threeForms() {
        let expected = Date(timeIntervalSince1970: 784_111_777)  // 1994-11-06 08:49:37 UTC
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:37 GMT") == expected)
        #expect(HTTPDate.parse("Sunday, 06-Nov-94 08:49:37 GMT") == expected)
        #expect(HTTPDate.parse("Sun Nov  6 08:49:37 1994") == expected)
        #expect(HTTPDate.parse("Thu, 01 Jan 1970 00:00:00 GMT") == Date(timeIntervalSince1970: 0))
        #expect(HTTPDate.parse("Tue, 29 Feb 2028 23:59:59 GMT") == Date(timeIntervalSince1970: 1_835_481_599))
        #expect(HTTPDate.parse("Monday, 07-Dec-26 10:00:00 GMT") == Date(timeIntervalSince1970: 1_796_637_600))
    }

    @Test("anything else is no date, never a trap", arguments: [
        "", "GMT", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 99999999999999999999 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49 GMT", "Sun, 06 Nov 1994 08:49:37:00 GMT", "Sun, 06 Nov 1994 +8:49:37 GMT",
        "Sun Nov  6 08:49:37 -1994", "Sun, +6 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-1994 08:49:37 GMT", "Sun, 29 Feb 1900 00:00:00 GMT",
    ])
    func refused(text: String) {
        #expect(HTTPDate.parse(text) == nil)
    }

    @Test("a URL's host is read as written: without user information or port, an IPv6 literal in its brackets")
    func hosts() {
        #expect(authorityHost(of: "http://127.0.0.1:8080/a") == "127.0.0.1")
        #expect(authorityHost(of: "https://user:pa@ss@example.com/x?y#z") == "example.com")
        #expect(authorityHost(of: "http://[::1]:80/") == "[::1]")
        #expect(authorityHost(of: "http://example.com?q=/") == "example.com")
        #expect(authorityHost(of: "http://example.com#frag@evil") == "example.com")
        #expect(authorityHost(of: "http:///path") == "")
        #expect(authorityHost(of: "mailto:someone") == nil)
    }
}
