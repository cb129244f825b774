import Testing

@testable import SFBlobs

/// A server's Content-Range is hostile input: every malformed, negative, inverted or overflowing form
/// is refused (nil), never trapped on, and only `bytes START-END/TOTAL` with START ≤ END < TOTAL is read.
@Suite struct ContentRangeTests {
    @Test func wellFormedRangesAreRead() {
        #expect(ContentRange("bytes 100-199/200") == ContentRange(start: 100, end: 199, total: 200))
        #expect(ContentRange(" bytes 0-0/1 ")?.total == 1)
    }

    @Test(arguments: [
        "", "bytes", "bytes */200", "bytes 0-199/*", "items 0-1/2", "bytes 10-5/20", "bytes 0-200/200", "bytes -1-5/10",
        "bytes 0-9223372036854775807/9223372036854775807", "bytes 0-99999999999999999999/99999999999999999999", "bytes 1-2-3/4",
        "bytes 0x10-0x20/0x30", "bytes 5-/10",
    ])
    func malformedRangesAreRefused(_ text: String) {
        #expect(ContentRange(text) == nil)
    }
}
