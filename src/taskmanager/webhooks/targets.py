"""Where a webhook may send: the SSRF rules of API.md §7, and a connection pinned to the
address that was checked.

Rules (OWASP SSRF Prevention Cheat Sheet; the address ranges from the IANA special-purpose
registries, RFC 6890):

* ``http`` or ``https`` only; no user-info (``user:pass@``), no fragment, a host required.
* A host that looks like an IPv4 address must be written as one, in dotted decimal:
  ``0x7f000001``, ``2130706433``, ``017700000001``, ``127.1`` are refused (resolvers read
  them as 127.0.0.1, WHATWG URL parsing too). IPv6 literals are checked as addresses;
  IPv4-mapped, IPv4-compatible, 6to4, Teredo and NAT64 forms by the IPv4 address inside.
* Link-local addresses (``169.254.0.0/16``, ``fe80::/10``) and cloud metadata endpoints
  are **always** refused; any other non-public address (loopback, private, unique-local,
  shared/CGNAT, multicast, unspecified, reserved, documentation...) unless
  ``TASKMANAGER_WEBHOOK_ALLOW_PRIVATE_TARGETS``.
* A name is resolved and **every** address it resolves to must pass. At delivery time the
  name is resolved again, checked again, and the connection goes to the checked address
  (``PinnedTarget``): the request carries the original ``Host`` header and TLS uses the
  host name for SNI and certificate verification, so there is no window between the check
  and the connection for DNS rebinding. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

MAX_URL_CHARS = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0

# Always refused, even where private targets are allowed: link-local (where the cloud
# metadata services live) and the metadata endpoints outside it.
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server (a public address)
        "192.0.0.192",  # Oracle Cloud
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# WHATWG URL: a host whose last label is a number (decimal, or 0x hex) is an IPv4 address.
_NUMERIC_LABEL = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)")
# A DNS name in its ASCII (IDNA) form: labels of 1-63 letters, digits, hyphens (and the
# underscores some real names carry), at most 253 characters (RFC 1035 §2.3.4, RFC 5890).
_DNS_NAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*"
)


class TargetRefused(ValueError):
    """The URL or the address it leads to is not an allowed webhook target (say why)."""


class TargetUnresolved(TargetRefused):
    """The host name could not be resolved (now): no address to check or connect to."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, Teredo, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = address.packed
    compatible = packed[:12] == bytes(12) and int(address) > 1  # not ``::`` nor ``::1``
    if address in _NAT64 or compatible:
        # NAT64 (RFC 6052) and the deprecated IPv4-compatible ``::a.b.c.d``.
        return ipaddress.IPv4Address(packed[12:])
    return None


def check_address(address: IPAddress, *, allow_private: bool) -> None:
    """Raise TargetRefused unless a connection to ``address`` is allowed."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            check_address(inner, allow_private=allow_private)
            if address.ipv4_mapped is not None:
                return
    if address in _METADATA:
        raise TargetRefused(f"{address} is a cloud metadata address")
    if any(address in network for network in _LINK_LOCAL):
        raise TargetRefused(f"{address} is a link-local address")
    if address.is_global and not address.is_multicast:
        return
    if not allow_private:
        raise TargetRefused(
            f"{address} is a loopback, private or reserved address "
            "(allowed only with TASKMANAGER_WEBHOOK_ALLOW_PRIVATE_TARGETS)"
        )


@dataclass(frozen=True, slots=True)
class Target:
    """A webhook URL that passed the syntax rules: its host (IDNA, lower case) and port."""

    url: httpx.URL
    host: str
    port: int
    literal: IPAddress | None  # the host when it is an IP literal


def parse_target(url: str) -> Target:
    """Check a webhook URL's form (see the module docstring); raise TargetRefused."""
    if len(url) > MAX_URL_CHARS:
        raise TargetRefused(f"must be at most {MAX_URL_CHARS} characters")
    import httpx  # on first use: ~6 MiB and ~100 ms a server without webhooks never needs

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise TargetRefused(f"is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise TargetRefused("must be an http or https URL")
    if parsed.userinfo:
        raise TargetRefused("must not contain a user name or password")
    if parsed.fragment:
        raise TargetRefused("must not contain a fragment")
    host = parsed.host.rstrip(".").lower()
    if not host:
        raise TargetRefused("must name a host")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise TargetRefused(f"port {parsed.port} is not a TCP port (1-65535)")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal: IPAddress | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
        if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
            raise TargetRefused(
                f"host {host!r} is an IPv4 address in a non-standard form; "
                "write it as four decimal numbers"
            ) from None
        ascii_host = parsed.raw_host.decode("ascii", "replace").rstrip(".").lower()
        if not _DNS_NAME.fullmatch(ascii_host):
            raise TargetRefused(f"host {host!r} is not a valid host name") from None
    return Target(url=parsed, host=host, port=port, literal=literal)


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The host's addresses from the system resolver (IPv4 and IPv6)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICSERV)
    return [str(info[4][0]) for info in infos]


async def resolve_checked(
    target: Target, *, allow_private: bool, resolver: Resolver = system_resolver
) -> IPAddress:
    """The address to connect to: the literal, or the first one the host resolves to.

    Raises TargetRefused when any resolved address is refused (a name must not lead
    anywhere internal), or when the name cannot be resolved (OSError's text, bounded time).
    """
    if target.literal is not None:
        check_address(target.literal, allow_private=allow_private)
        return target.literal
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            found = await resolver(target.host, target.port)
    except TimeoutError:
        raise TargetUnresolved(f"resolving {target.host!r} timed out") from None
    except OSError as exc:
        raise TargetUnresolved(f"{target.host!r} cannot be resolved ({exc})") from None
    addresses: list[IPAddress] = []
    for text in found:
        # Scoped IPv6 (``fe80::1%eth0``) is link-local: the scope is dropped, the check refuses.
        address = ipaddress.ip_address(text.split("%", 1)[0])
        check_address(address, allow_private=allow_private)
        addresses.append(address)
    if not addresses:
        raise TargetUnresolved(f"{target.host!r} resolves to no address")
    return addresses[0]


@dataclass(frozen=True, slots=True)
class PinnedTarget:
    """A request to the checked address that still speaks to the named host."""

    url: httpx.URL  # with the checked IP address as its host
    host_header: str
    sni_hostname: str | None  # https to a name: SNI and certificate verification use it


def pin(target: Target, address: IPAddress) -> PinnedTarget:
    """Point ``target`` at ``address`` (already checked) without changing what the server sees."""
    default_port = 443 if target.url.scheme == "https" else 80
    shown = f"[{target.host}]" if isinstance(target.literal, ipaddress.IPv6Address) else target.host
    host_header = shown if target.port == default_port else f"{shown}:{target.port}"
    sni = target.host if target.url.scheme == "https" and target.literal is None else None
    return PinnedTarget(
        url=target.url.copy_with(host=str(address)), host_header=host_header, sni_hostname=sni
    )
