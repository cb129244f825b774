import Foundation
import SFSystem

/// The agent's DHCP servers, one per network, alive as long as the agent.
actor DHCPServers {
    private var servers: [UUID: DHCPServer] = [:]

    func server(for network: UUID, thread: NamespaceExecutor, make: () -> DHCPServer) -> DHCPServer {
        if let server = servers[network], server.thread === thread { return server }
        let server = make()
        servers[network] = server
        return server
    }

    func remove(_ network: UUID) -> DHCPServer? {
        servers.removeValue(forKey: network)
    }
}
