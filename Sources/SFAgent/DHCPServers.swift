import Foundation
import SFSystem

/// The agent's DHCP servers, one per network, alive as long as the agent.
actor DHCPServers {
    private var servers: [UUID: DHCPServer] = [:]

    /// The network's server, made with `make` when there is none or its thread is in another
    /// namespace than `thread` (the namespace was made again). A server whose thread is another one
    /// in the same namespace is kept: namespace threads come and go (``NamespaceThreads`` keeps a
    /// bounded number), and a new server would tell dnsmasq to re-read its hosts at every pass.
    func server(for network: UUID, thread: NamespaceExecutor, make: () -> DHCPServer) -> DHCPServer {
        if let server = servers[network], server.thread === thread || (thread.identity != nil && server.thread.identity == thread.identity) {
            return server
        }
        let server = make()
        servers[network] = server
        return server
    }

    func remove(_ network: UUID) -> DHCPServer? {
        servers.removeValue(forKey: network)
    }
}
