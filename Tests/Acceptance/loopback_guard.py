"""Keep a Python process's network traffic on loopback.

install() patches the socket module so that this process can resolve only loopback literals and
"localhost" (answered from /etc/hosts, so no DNS query leaves the machine) and can connect only
to loopback addresses (127.0.0.0/8, ::1) or Unix sockets. Anything else raises
NonLoopbackRefused before a packet is sent. It also puts the loopback names into no_proxy, so a
proxy set in the environment is not used for the server under test.

client_api.py and scripts/api-fuzz install it before they import requests or schemathesis: the
host lab forbids test traffic to any address that is not this machine's.
"""

import ipaddress
import os
import socket


class NonLoopbackRefused(OSError):
    pass


_LOOPBACK_NAMES = ('localhost', 'localhost.localdomain', 'ip6-localhost')
_installed = False


def _literal(host):
    """The host as an ip_address, or None when it is a name."""
    if isinstance(host, bytes):
        host = host.decode('ascii', 'replace')
    host = str(host).strip('[]').split('%', 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback_host(host):
    """True for a loopback IP literal or one of the loopback names."""
    address = _literal(host)
    if address is not None:
        return address.is_loopback
    if isinstance(host, bytes):
        host = host.decode('ascii', 'replace')
    return str(host).lower().rstrip('.') in _LOOPBACK_NAMES


def install():
    global _installed
    if _installed:
        return
    _installed = True

    original_getaddrinfo = socket.getaddrinfo
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, port, *args, **kwargs):
        if host is not None and not is_loopback_host(host):
            raise NonLoopbackRefused(
                'loopback_guard: refusing to resolve %r: tests talk to loopback only' % (host,))
        results = original_getaddrinfo(host, port, *args, **kwargs)
        kept = [r for r in results
                if r[0] not in (socket.AF_INET, socket.AF_INET6)
                or ipaddress.ip_address(r[4][0].split('%', 1)[0]).is_loopback]
        if not kept:
            raise NonLoopbackRefused(
                'loopback_guard: %r resolves to no loopback address' % (host,))
        return kept

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            literal = _literal(host)
            if literal is None or not literal.is_loopback:
                raise NonLoopbackRefused(
                    'loopback_guard: refusing to connect to %r: tests talk to loopback only'
                    % (address,))

    def connect(self, address):
        check(self, address)
        return original_connect(self, address)

    def connect_ex(self, address):
        check(self, address)
        return original_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex

    loopback = ['127.0.0.0/8', '127.0.0.1', 'localhost', '::1']
    for variable in ('no_proxy', 'NO_PROXY'):
        present = [v.strip() for v in os.environ.get(variable, '').split(',') if v.strip()]
        os.environ[variable] = ','.join(present + [n for n in loopback if n not in present])
