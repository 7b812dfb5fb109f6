"""The suite's own network rule, enforced in the test process: connections and name lookups go to
loopback only (127.0.0.0/8, ::1, `localhost`). A test that would reach any other address (a webhook
URL on a public or private IP, a DNS name that needs the machine's resolver) fails at once with a clear
error instead of sending traffic. Subprocesses (workers, servers) get the same addresses from the tests.
"""

from __future__ import annotations

import ipaddress
import socket

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class NonLoopbackTraffic(OSError):
    pass


def _is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    host = host.strip("[]").split("%", 1)[0]
    if host.lower() in LOCAL_NAMES or host.lower().endswith(".localhost") or host == "":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def install() -> None:
    real_getaddrinfo, real_connect, real_connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host):
            raise socket.gaierror(socket.EAI_NONAME, f"tests resolve loopback names only, not {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def _check(sock, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise NonLoopbackTraffic(f"tests connect to loopback only, not {address[0]!r}")

    def connect(self, address):
        _check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(self, address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
