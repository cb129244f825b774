import SFSystem

/// This node's place on the mesh, the underlay network VXLANs run over.
public struct Mesh: Sendable, Equatable {
    /// This node's mesh address, which the other nodes flood to; nil on a single node.
    public var address: IPv4Address?
    /// The interface holding it, which VXLANs are bound to; nil lets the kernel route.
    public var interface: String?

    public init(address: IPv4Address? = nil, interface: String? = nil) {
        self.address = address
        self.interface = interface
    }
}
