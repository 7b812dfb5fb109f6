"""Server-side request forgery guard: which URLs and addresses a webhook may be sent to.

A merchant chooses the URL, so without checks our workers would POST wherever it points: the cloud
metadata service, the database, an admin page on localhost. The rules:

- `https://` only; plain `http://` when DEBUG is on or every address of the host is allow-listed.
- The host is resolved at every delivery (not only when the endpoint is created: DNS can change, and
  a name may answer differently each time). An address is refused when it is loopback, private,
  link-local, multicast, reserved, unspecified, shared or a cloud metadata address (IPv6 forms that
  embed an IPv4 address are judged by it), unless it is inside WEBHOOK_ALLOWED_NETWORKS.
- The delivery then connects to an address that passed (transport.py), never resolving again.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from webhooks.config import IPNetwork
from webhooks.errors import WebhookRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Instance metadata services (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS over IPv6). Link-local
#: or private anyway; named so a refusal says what it was.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (an address that passed the checks) and what to ask for."""

    scheme: str
    host: str
    port: int
    #: Path and query, as sent in the request line.
    path: str
    addresses: tuple[IPAddress, ...]

    @property
    def address(self) -> IPAddress:
        return self.addresses[0]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), which is where it really goes."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress, *, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why a webhook may not be sent to `address` (None: it may). The allow-list wins over every rule."""
    if _in(address, allowed):
        return None
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = address_refusal(embedded, allowed=allowed)
            return f"{address} stands for {embedded}: {reason}" if reason else None
    for attribute, what in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(address, attribute):
            return f"{address} is {what}"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def _split(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused("invalid_url", f"Not a valid URL: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise WebhookRefused("invalid_url", "The URL must be an absolute https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("invalid_url", "The URL must not contain credentials; use the signature to authenticate us.")
    if parts.fragment:
        raise WebhookRefused("invalid_url", "The URL must not have a #fragment.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80), path


def _resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    try:
        return (ipaddress.ip_address(host),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookRefused("url_unresolvable", f"The host {host} does not resolve ({exc}).") from None
    found: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 zone id
        if address not in found:
            found.append(address)
    if not found:
        raise WebhookRefused("url_unresolvable", f"The host {host} has no address.")
    return tuple(found)


def url_check(url: str, *, allowed: Sequence[IPNetwork] = (), allow_plain_http: bool = False) -> Target:
    """Resolve and check `url`; the Target to connect to, or WebhookRefused.

    Only the addresses that pass are kept, and the delivery connects to the first of them (never to
    another the name might resolve to later), so a name that answers both a public address and
    127.0.0.1 can only ever reach the public one. None passing: refused, with the reasons.
    """
    scheme, host, port, path = _split(url)
    resolved = _resolve(host, port)
    refusals = {address: address_refusal(address, allowed=allowed) for address in resolved}
    addresses = tuple(a for a in resolved if refusals[a] is None)
    if not addresses:
        reasons = "; ".join(dict.fromkeys(r for r in refusals.values() if r))
        raise WebhookRefused("url_not_allowed", f"{host} resolves to {reasons}: webhooks are not sent there.")
    if scheme == "http" and not allow_plain_http:
        # Plain http only where the provider said so: the allow-listed networks (local runs, staging).
        addresses = tuple(a for a in addresses if _in(a, allowed))
        if not addresses:
            raise WebhookRefused("insecure_url", "Use an https:// URL (plain http is accepted only for allow-listed networks).")
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=addresses)


def _in(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in networks if network.version == address.version)
