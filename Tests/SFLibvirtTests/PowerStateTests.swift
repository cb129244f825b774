import Testing

@testable import SFLibvirt

@Suite struct PowerStateTests {
    @Test func mapsEveryLibvirtState() {
        // virDomainState: 0 nostate, 1 running, 2 blocked, 3 paused, 4 shutdown, 5 shutoff, 6 crashed, 7 pmsuspended.
        let expected: [Int32: PowerState] = [0: .on, 1: .on, 2: .on, 3: .paused, 4: .on, 5: .off, 6: .crashed, 7: .paused, 99: .on]
        for (state, power) in expected {
            #expect(PowerState(libvirtState: state) == power, "state \(state)")
        }
    }

    @Test func mapsEventKinds() {
        let kinds: [DomainLifecycleEvent.Kind] = (0...8).map { DomainLifecycleEvent.Kind(libvirtEvent: $0) }
        #expect(kinds == [.defined, .undefined, .started, .suspended, .resumed, .stopped, .shutdown, .pmsuspended, .crashed])
        #expect(DomainLifecycleEvent.Kind(libvirtEvent: 42) == .unknown(42))
    }
}
