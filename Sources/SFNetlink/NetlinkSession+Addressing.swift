import CNetlink
import Logging
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

// IPv4 addresses and main-table routes.
extension NetlinkSession {
    // MARK: - Addresses

    /// Adds `address` (with its prefix length) to `device`, with the network's broadcast address as
    /// `ip addr add ... brd +` would. An address that is already there is not an error.
    public func addAddress(_ address: IPv4Prefix, to device: String) throws {
        let operation = "add address"
        let object = "\(address) on \(device)"
        let index = try index(of: device, operation: operation, object: object)
        let rc = try withAddress(address, index: index, operation: operation, object: object) { sock, addr in
            rtnl_addr_add(sock, addr, 0)
        }
        if rc == -NLE_EXIST {
            logger.debug("address exists", metadata: ["link.name": "\(device)", "address": "\(address)"])
            return
        }
        if rc < 0 { throw NetlinkError(operation: operation, object: object, libnlCode: rc) }
        logger.info("added address", metadata: ["link.name": "\(device)", "address": "\(address)"])
    }

    /// Removes `address` from `device`. An address (or device) that is not there is not an error.
    public func deleteAddress(_ address: IPv4Prefix, from device: String) throws {
        let operation = "delete address"
        let object = "\(address) on \(device)"
        guard let index = try indexIfPresent(of: device, operation: operation) else { return }
        let rc = try withAddress(address, index: index, operation: operation, object: object) { sock, addr in
            rtnl_addr_delete(sock, addr, 0)
        }
        if rc == -NLE_NOADDR || rc == -NLE_OBJ_NOTFOUND { return }
        if rc < 0 { throw NetlinkError(operation: operation, object: object, libnlCode: rc) }
        logger.info("deleted address", metadata: ["link.name": "\(device)", "address": "\(address)"])
    }

    /// The IPv4 addresses on `device`, with their prefix lengths, in the kernel's order.
    public func addresses(of device: String) throws -> [IPv4Prefix] {
        let index = try index(of: device, operation: "list addresses")
        return try addressesByIndex(object: device)[index] ?? []
    }

    /// Every IPv4 address of the namespace, with its prefix length, by the ifindex of its device,
    /// in the kernel's order: one request, where ``addresses(of:)`` for each device costs one each.
    public func addressesByIndex() throws -> [Int32: [IPv4Prefix]] {
        try addressesByIndex(object: "in namespace \(namespace ?? "(own)")")
    }

    private func addressesByIndex(object: String) throws -> [Int32: [IPv4Prefix]] {
        var cache: OpaquePointer?
        let rc = rtnl_addr_alloc_cache(try socket(), &cache)
        guard rc >= 0, let cache else { throw NetlinkError(operation: "list addresses", object: object, libnlCode: rc) }
        defer { nl_cache_free(cache) }
        var result: [Int32: [IPv4Prefix]] = [:]
        var entry = nl_cache_get_first(cache)
        while let current = entry {
            if rtnl_addr_get_family(current) == AF_INET,
                let local = rtnl_addr_get_local(current), let prefix = ipv4Prefix(of: local),
                let withLength = try? IPv4Prefix(address: prefix.address, length: Int(rtnl_addr_get_prefixlen(current)))
            {
                result[rtnl_addr_get_ifindex(current), default: []].append(withLength)
            }
            entry = nl_cache_get_next(current)
        }
        return result
    }

    /// Builds an `rtnl_addr` for `address` on ifindex `index` and hands it to `body`.
    private func withAddress(
        _ address: IPv4Prefix, index: Int32, operation: String, object: String,
        _ body: (OpaquePointer, OpaquePointer) -> Int32
    ) throws -> Int32 {
        let sock = try socket()
        guard let addr = rtnl_addr_alloc() else {
            throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
        }
        defer { rtnl_addr_put(addr) }
        rtnl_addr_set_ifindex(addr, index)
        rtnl_addr_set_family(addr, AF_INET)
        guard let local = makeNLAddress(address.address, length: address.length) else {
            throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
        }
        defer { nl_addr_put(local) }
        var rc = rtnl_addr_set_local(addr, local)
        if rc < 0 { throw NetlinkError(operation: operation, object: object, libnlCode: rc) }
        rtnl_addr_set_prefixlen(addr, Int32(address.length))
        // /31 and /32 have no broadcast address (RFC 3021).
        if address.length < 31 {
            guard let broadcast = makeNLAddress(address.broadcast) else {
                throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
            }
            rc = rtnl_addr_set_broadcast(addr, broadcast)
            nl_addr_put(broadcast)
            if rc < 0 { throw NetlinkError(operation: operation, object: object, libnlCode: rc) }
        }
        return body(sock, addr)
    }

    // MARK: - Routes

    /// Adds `route` to the main table. An identical route is not an error; a different route to the
    /// same destination is (`NLE_EXIST`): use ``replaceRoute(_:)`` to overwrite it.
    public func addRoute(_ route: Route) throws {
        let operation = "add route"
        let rc = try withRoute(route, operation: operation) { sock, object in rtnl_route_add(sock, object, NLM_F_EXCL) }
        if rc == -NLE_EXIST {
            if try routes().contains(where: { $0.satisfies(route) }) {
                logger.debug("route exists", metadata: ["route": "\(route)"])
                return
            }
            throw NetlinkError(
                operation: operation, object: "\(route)", code: NetlinkError.exists,
                message: "\(String(cString: nl_geterror(NLE_EXIST))): a different route to \(route.destination.network) exists")
        }
        if rc < 0 { throw NetlinkError(operation: operation, object: "\(route)", libnlCode: rc) }
        logger.info("added route", metadata: ["route": "\(route)"])
    }

    /// Adds `route` to the main table, replacing any route to the same destination.
    public func replaceRoute(_ route: Route) throws {
        let operation = "replace route"
        let rc = try withRoute(route, operation: operation) { sock, object in rtnl_route_add(sock, object, NLM_F_REPLACE) }
        if rc < 0 { throw NetlinkError(operation: operation, object: "\(route)", libnlCode: rc) }
        logger.info("replaced route", metadata: ["route": "\(route)"])
    }

    /// Deletes `route` from the main table. A route (or device) that is not there is not an error.
    public func deleteRoute(_ route: Route) throws {
        let operation = "delete route"
        if let device = route.device {
            guard try indexIfPresent(of: device, operation: operation) != nil else { return }
        }
        let rc = try withRoute(route, operation: operation) { sock, object in rtnl_route_delete(sock, object, 0) }
        if rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV { return }
        if rc < 0 { throw NetlinkError(operation: operation, object: "\(route)", libnlCode: rc) }
        logger.info("deleted route", metadata: ["route": "\(route)"])
    }

    /// The unicast IPv4 routes of the main table, with their first next hop.
    public func routes() throws -> [Route] {
        let operation = "list routes"
        let object = "in namespace \(namespace ?? "(own)")"
        // Each next hop's device is named by its index alone (an ioctl on this thread, so in this
        // namespace): a dump of every link to name a route or two cost 50 ms at 3000 links.
        var names: [Int32: String] = [:]
        func name(of index: Int32) -> String? {
            if let known = names[index] { return known }
            var buffer = [CChar](repeating: 0, count: Int(IF_NAMESIZE) + 1)
            guard index > 0, if_indextoname(UInt32(index), &buffer) != nil else { return nil }
            let found = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            names[index] = found
            return found
        }
        var cache: OpaquePointer?
        let rc = rtnl_route_alloc_cache(try socket(), AF_INET, 0, &cache)
        guard rc >= 0, let cache else { throw NetlinkError(operation: operation, object: object, libnlCode: rc) }
        defer { nl_cache_free(cache) }
        var result: [Route] = []
        var current = nl_cache_get_first(cache)
        while let route = current {
            current = nl_cache_get_next(route)
            guard rtnl_route_get_table(route) == UInt32(RT_TABLE_MAIN.rawValue),
                rtnl_route_get_type(route) == UInt8(RTN_UNICAST),
                rtnl_route_get_family(route) == UInt8(AF_INET),
                let dst = rtnl_route_get_dst(route), let destination = ipv4Prefix(of: dst)
            else { continue }
            var gateway: IPv4Address?
            var device: String?
            if rtnl_route_get_nnexthops(route) > 0, let hop = rtnl_route_nexthop_n(route, 0) {
                gateway = rtnl_route_nh_get_gateway(hop).flatMap(ipv4Prefix(of:))?.address
                let index = rtnl_route_nh_get_ifindex(hop)
                device = name(of: index)
            }
            result.append(Route(destination: destination, gateway: gateway, device: device))
        }
        return result
    }

    /// Builds an `rtnl_route` for `route` and hands it to `body`; returns what `body` returns.
    private func withRoute(
        _ route: Route, operation: String, _ body: (OpaquePointer, OpaquePointer) -> Int32
    ) throws -> Int32 {
        let object = "\(route)"
        let deviceIndex = try route.device.map { try index(of: $0, operation: operation, object: object) }
        let sock = try socket()
        guard let built = rtnl_route_alloc() else {
            throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
        }
        defer { rtnl_route_put(built) }
        rtnl_route_set_family(built, UInt8(AF_INET))
        rtnl_route_set_table(built, UInt32(RT_TABLE_MAIN.rawValue))
        rtnl_route_set_type(built, UInt8(RTN_UNICAST))
        let network = route.destination.network
        guard let dst = makeNLAddress(network.address, length: network.length) else {
            throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
        }
        let rc = rtnl_route_set_dst(built, dst)
        nl_addr_put(dst)
        if rc < 0 { throw NetlinkError(operation: operation, object: object, libnlCode: rc) }
        // The scope is left unset: libnl picks "link" for a route without a gateway, "global" otherwise,
        // as `ip route` does.
        if route.gateway != nil || deviceIndex != nil {
            // Built before the hop, so that a failure has no hop to free.
            var gateway: OpaquePointer?
            if let wanted = route.gateway {
                guard let address = makeNLAddress(wanted) else {
                    throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
                }
                gateway = address
            }
            // The hop takes its own reference to the gateway.
            defer { if let gateway { nl_addr_put(gateway) } }
            guard let hop = rtnl_route_nh_alloc() else {
                throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
            }
            if let deviceIndex { rtnl_route_nh_set_ifindex(hop, deviceIndex) }
            if let gateway { rtnl_route_nh_set_gateway(hop, gateway) }
            // The route owns the next hop from here on.
            rtnl_route_add_nexthop(built, hop)
        }
        return body(sock, built)
    }
}

extension Route {
    /// Whether this route (read back from the kernel) is what `wanted` asks for: same network, same
    /// gateway, and the same device if `wanted` names one.
    func satisfies(_ wanted: Route) -> Bool {
        destination.network == wanted.destination.network && gateway == wanted.gateway
            && (wanted.device == nil || device == wanted.device)
    }
}
