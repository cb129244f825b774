import Foundation
import Testing
import SFSystem

@Suite("UUID text")
struct UUIDTextTests {
    @Test("lowercasedString is Foundation's text in lowercase, for any UUID")
    func lowercase() {
        for uuid in [UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)), UUID(uuidString: "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF")!]
            + (0..<200).map({ _ in UUID() })
        {
            #expect(uuid.lowercasedString == uuid.uuidString.lowercased())
        }
    }

    @Test("random UUIDs are version 4, RFC 4122 variant, and differ")
    func random() {
        let uuids = (0..<1000).map { _ in UUID.random() }
        #expect(Set(uuids).count == uuids.count)
        for uuid in uuids {
            #expect(uuid.uuid.6 >> 4 == 4)
            #expect(uuid.uuid.8 >> 6 == 0b10)
            #expect(UUID(uuidString: uuid.lowercasedString) == uuid)
        }
    }
}

extension UUIDTextTests {
    @Test("parsing reads what uuidString reads, in either case, and refuses what it refuses")
    func parsing() {
        for uuid in (0..<200).map({ _ in UUID() }) {
            #expect(UUID(parsing: uuid.uuidString) == uuid)
            #expect(UUID(parsing: uuid.lowercasedString) == uuid)
        }
        for bad in ["", "not-a-uuid", "00000000-0000-0000-0000-00000000000", "00000000-0000-0000-0000-0000000000000",
            "00000000000000000000000000000000000-", "0000000g-0000-0000-0000-000000000000", "00000000-0000-0000-0000_000000000000",
            "ü0000000-0000-0000-0000-00000000000"]
        {
            #expect(UUID(parsing: bad) == nil, "\(bad)")
            #expect(UUID(uuidString: bad) == nil, "Foundation accepts \(bad)")
        }
    }
}
