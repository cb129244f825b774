import Foundation
import Testing
import SFStore

@testable import SFAPI

/// The hand-written JSON of the API's answers reads back as what was written, by Foundation's
/// own parser, and in the forms `JSONEncoder` wrote before it.
@Suite("JSON writer")
struct JSONWriterTests {
    static func parsed(_ value: some WireValue) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(JSONWriter.encode(value)), options: [.fragmentsAllowed])
    }

    static func text(_ value: some WireValue) -> String {
        String(decoding: JSONWriter.encode(value), as: UTF8.self)
    }

    @Test("strings: quotes, backslashes and every control character escaped; slashes and non-ASCII text kept")
    func strings() throws {
        let controls = String(decoding: (0..<0x20).map { UInt8($0) }, as: UTF8.self)
        for string in ["", "plain", "say \"hi\"", #"C:\dir\"#, "a/b", "ünïcødé ✓ 🐟", controls, "end\u{7F}"] {
            #expect(try Self.parsed(string) as? String == string, "\(string.debugDescription)")
        }
        #expect(Self.text("a/b\n\t\"\u{01}") == #""a/b\n\t\"\u0001""#)
        #expect(Self.text("🐟") == "\"🐟\"")
    }

    @Test("numbers: integers, whole doubles without .0, fractions, and nothing non-finite")
    func numbers() {
        #expect(Self.text(42) == "42")
        #expect(Self.text(Int64.min) == "-9223372036854775808")
        #expect(Self.text(1_796_077_472.0) == "1796077472")
        #expect(Self.text(1.5) == "1.5")
        #expect(Self.text(-0.25) == "-0.25")
        #expect(Self.text(Double.nan) == "null")
        #expect(Self.text(Double.infinity) == "null")
        #expect(Self.text(true) == "true")
        #expect(Self.text(String?.none) == "null")
    }

    @Test("objects and arrays: members in order, commas only between, nesting restores the outer state")
    func structure() throws {
        var json = JSONWriter()
        json.object { json in
            json.put("a", 1)
            json.put("empty", [String: Int]())
            json.put("list", [[1, 2], [], [3]])
            json.put("nested", ["x": JSONValue.array([.null, .bool(false), .string("s"), .object(["k": 2.5])])])
            json.put("after", "z")
        }
        #expect(String(decoding: json.bytes, as: UTF8.self)
            == #"{"a":1,"empty":{},"list":[[1,2],[],[3]],"nested":{"x":[null,false,"s",{"k":2.5}]},"after":"z"}"#)
    }

    @Test("an error body with detail carries it as its error")
    func errorDetail() throws {
        let error = APIError(.forbidden, detail: ["deleted": ["a"], "unable": ["b"]], message: "networks still have interfaces")
        #expect(error.detail.map { String(decoding: $0.bytes, as: UTF8.self) }?.contains(#""unable":["b"]"#) == true)
    }
}
