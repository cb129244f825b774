import SFSystem
import Testing

/// Parsing and printing of the address types: pure values, no root and no namespace needed.
@Suite struct AddressTests {
    @Test(arguments: [
        ("0.0.0.0", UInt32(0)),
        ("10.0.0.1", 0x0A00_0001),
        ("192.0.2.1", 0xC000_0201),
        ("255.255.255.255", 0xFFFF_FFFF),
        ("1.20.100.0", 0x0114_6400),
    ])
    func parsesPlainDottedQuads(text: String, value: UInt32) throws {
        let address = try #require(IPv4Address(text))
        #expect(address.value == value)
        #expect(address.description == text, "prints back as given")
        #expect(IPv4Address(value) == address)
    }

    /// Everything here is refused. The leading-zero forms matter most: inet_aton (and so `ip addr add`)
    /// reads 010 as octal 8, so accepting it as decimal 10 would name a different address.
    @Test(arguments: [
        "010.0.0.1", "10.0.0.01", "00.0.0.0", "10.000.0.1",
        "+1.0.0.1", "10.0.0.+1", "-1.0.0.1", " 10.0.0.1", "10.0.0.1 ", "10.0.0. 1",
        "256.0.0.1", "10.0.0.999", "1000.0.0.1",
        "10.0.0", "10.0.0.1.2", "10..0.1", ".10.0.0.1", "10.0.0.1.", "", "...",
        "0x0A.0.0.1", "10.0.0.1a", "a.b.c.d", "１０.0.0.1", "10.0.0.1/24",
    ])
    func refusesAnythingButPlainDecimal(text: String) {
        #expect(IPv4Address(text) == nil, "'\(text)'")
    }

    @Test func convertsToAndFromNetworkOrder() {
        let address = IPv4Address(0xC000_0201)
        #expect(address.octets == [192, 0, 2, 1])
        #expect(IPv4Address(networkOrder: address.networkOrder) == address)
        withUnsafeBytes(of: address.networkOrder) { bytes in
            #expect(Array(bytes) == [192, 0, 2, 1], "in_addr's memory order")
        }
    }

    @Test func ordersNumerically() throws {
        let nine = try #require(IPv4Address("10.0.0.9"))
        let ten = try #require(IPv4Address("10.0.0.10"))
        #expect(nine < ten)
        #expect(try #require(IPv4Address("9.255.255.255")) < (try #require(IPv4Address("10.0.0.0"))))
    }

    @Test(arguments: [
        ("10.0.0.1/24", "10.0.0.1", 24),
        ("10.0.0.1/0", "10.0.0.1", 0),
        ("10.0.0.1/32", "10.0.0.1", 32),
        ("10.0.0.1/8", "10.0.0.1", 8),
        ("10.0.0.1", "10.0.0.1", 32),
    ])
    func parsesPrefixes(text: String, address: String, length: Int) throws {
        let prefix = try #require(IPv4Prefix(text))
        #expect(prefix.address == IPv4Address(address))
        #expect(prefix.length == length)
        #expect(prefix.description == "\(address)/\(length)")
        #expect(try IPv4Prefix.parse(text) == prefix)
    }

    @Test(arguments: [
        "10.0.0.1/024", "10.0.0.1/00", "10.0.0.1/08", "10.0.0.1/+24", "10.0.0.1/-1", "10.0.0.1/33",
        "10.0.0.1/100", "10.0.0.1/", "10.0.0.1/24/8", "/24", "10.0.0.1/ 24", "10.0.0.1/24 ",
        "10.0.0.1/0x18", "10.0.0.1/２４", "010.0.0.1/24", "10.0.0.1/a",
    ])
    func refusesMalformedPrefixes(text: String) {
        #expect(IPv4Prefix(text) == nil, "'\(text)'")
        let error = #expect(throws: AddressError.self) { try IPv4Prefix.parse(text) }
        #expect(error?.description.contains("'\(text)'") == true, "the error quotes the text: \(error?.description ?? "")")
    }

    @Test func refusesOutOfRangeLengthsWhenBuilt() throws {
        let address = IPv4Address(0x0A00_0001)
        #expect(try IPv4Prefix(address: address, length: 0).length == 0)
        #expect(try IPv4Prefix(address: address, length: 32).length == 32)
        for length in [-1, 33] {
            let error = #expect(throws: AddressError.self) { try IPv4Prefix(address: address, length: length) }
            #expect(error?.description.contains("\(length)") == true)
        }
    }

    @Test(arguments: [
        ("10.0.0.77/24", "255.255.255.0", "10.0.0.0/24", "10.0.0.255"),
        ("172.16.5.4/12", "255.240.0.0", "172.16.0.0/12", "172.31.255.255"),
        ("192.0.2.130/25", "255.255.255.128", "192.0.2.128/25", "192.0.2.255"),
        ("192.0.2.9/31", "255.255.255.254", "192.0.2.8/31", "192.0.2.9"),
        ("192.0.2.9/32", "255.255.255.255", "192.0.2.9/32", "192.0.2.9"),
        ("192.0.2.9/0", "0.0.0.0", "0.0.0.0/0", "255.255.255.255"),
    ])
    func computesNetmaskNetworkAndBroadcast(text: String, netmask: String, network: String, broadcast: String) throws {
        let prefix = try #require(IPv4Prefix(text))
        #expect(prefix.netmask.description == netmask)
        #expect(prefix.network.description == network)
        #expect(prefix.broadcast.description == broadcast)
    }

    @Test func hostsAndContainment() throws {
        let prefix = try IPv4Prefix.parse("10.1.2.77/24")
        #expect(prefix.host(0).description == "10.1.2.0", "counted from the network, not the address")
        #expect(prefix.host(1).description == "10.1.2.1")
        #expect(prefix.host(254).description == "10.1.2.254")
        #expect(try IPv4Prefix.parse("10.1.2.0/16").host(258).description == "10.1.1.2")
        #expect(try IPv4Prefix.parse("255.255.255.255/32").host(1).description == "0.0.0.0", "wraps rather than traps")

        #expect(prefix.contains(try #require(IPv4Address("10.1.2.0"))))
        #expect(prefix.contains(try #require(IPv4Address("10.1.2.255"))))
        #expect(!prefix.contains(try #require(IPv4Address("10.1.3.0"))))
        #expect(!prefix.contains(try #require(IPv4Address("10.1.1.255"))))
        #expect(try IPv4Prefix.parse("0.0.0.0/0").contains(IPv4Address(0xFFFF_FFFF)))
    }

    @Test func parsesAndPrintsMACAddresses() throws {
        let mac = try #require(MACAddress("02:5F:00:ab:cD:0e"))
        #expect(mac.octets == [0x02, 0x5F, 0x00, 0xAB, 0xCD, 0x0E])
        #expect(mac.description == "02:5f:00:ab:cd:0e", "lower case, two digits per octet")
        #expect(MACAddress(mac.description) == mac)
        #expect(try MACAddress(octets: [0, 1, 2, 3, 4, 255]).description == "00:01:02:03:04:ff")
        #expect(MACAddress.zero.description == "00:00:00:00:00:00")
        #expect(MACAddress("ff:ff:ff:ff:ff:ff")?.octets == [UInt8](repeating: 255, count: 6))
    }

    @Test(arguments: [
        "", "02:5f:00:ab:cd", "02:5f:00:ab:cd:0e:11", "02:5f:00:ab:cd:e", "02:5f:00:ab:cd:00e",
        "02-5f-00-ab-cd-0e", "025f.00ab.cd0e", "02:5f:00:ab:cd:+e", "02:5f:00:ab:cd:-0", "02:5f:00:ab:cd:0g",
        "02:5f:00:ab:cd:", ":02:5f:00:ab:cd", "02:5f::ab:cd:0e", " 02:5f:00:ab:cd:0e", "02:5f:00:ab:cd:０e",
    ])
    func refusesMalformedMACAddresses(text: String) {
        #expect(MACAddress(text) == nil, "'\(text)'")
    }

    @Test func refusesMACAddressesOfTheWrongLength() {
        for count in [0, 5, 7] {
            let error = #expect(throws: AddressError.self) { try MACAddress(octets: [UInt8](repeating: 1, count: count)) }
            #expect(error?.description.contains("\(count)") == true)
        }
    }
}
