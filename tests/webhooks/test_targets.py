"""The SSRF rules as functions (``webhooks.targets``), and the back-off schedule."""

from __future__ import annotations

import ipaddress
import random
from datetime import timedelta

import pytest

from taskmanager.webhooks.delivery import MAX_ATTEMPTS, nominal_delay, retry_delay
from taskmanager.webhooks.targets import (
    TargetRefused,
    check_address,
    parse_target,
    pin,
    resolve_checked,
)

ALWAYS_REFUSED = [
    "169.254.169.254",
    "169.254.0.1",
    "fe80::1",
    "::ffff:169.254.169.254",
    "fd00:ec2::254",
    "100.100.100.200",
    "168.63.129.16",
]
PRIVATE = [
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::1",
    "10.0.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "100.64.0.1",
    "fc00::1",
    "0.0.0.0",  # noqa: S104 - an address to refuse, not one to bind
    "::",
    "224.0.0.1",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "192.0.2.1",
]
PUBLIC = ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "::ffff:1.1.1.1"]


@pytest.mark.parametrize("address", ALWAYS_REFUSED)
@pytest.mark.parametrize("allow_private", [False, True])
def test_link_local_and_metadata_are_always_refused(address: str, allow_private: bool) -> None:
    with pytest.raises(TargetRefused):
        check_address(ipaddress.ip_address(address), allow_private=allow_private)


@pytest.mark.parametrize("address", PRIVATE)
def test_private_addresses_need_the_setting(address: str) -> None:
    with pytest.raises(TargetRefused, match="TASKMANAGER_WEBHOOK_ALLOW_PRIVATE_TARGETS"):
        check_address(ipaddress.ip_address(address), allow_private=False)
    check_address(ipaddress.ip_address(address), allow_private=True)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    check_address(ipaddress.ip_address(address), allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://example.com/",
        "ftp://example.com/",
        "http://user@example.com/",
        "http://example.com/#frag",
        "http://0x7f000001/",
        "http://0X7F.0.0.1/",
        "http://2130706433/",
        "http://017700000001/",
        "http://127.1/",
        "http://1.2.3.04/",
        "http://example.123/",
        "http:///",
        "http://[::1/",
        "http://" + "a" * 2100 + ".com/",
        "http://example.com:0/",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "http://exa%20mple.com/",
        "http://" + "a" * 64 + ".example.com/",
        "http://-example.com/",
        "http://example..com/",
    ],
)
def test_malformed_or_disguised_urls_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        parse_target(url)


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com:8443/x", "http://bücher.example/", "https://a_b.example.com/"],
)
def test_ordinary_host_names_and_ports_pass(url: str) -> None:
    parse_target(url)


def test_loopback_ipv6_is_named_as_itself() -> None:
    with pytest.raises(TargetRefused, match=r"^::1 is a loopback"):
        check_address(ipaddress.ip_address("::1"), allow_private=False)


async def test_every_resolved_address_must_pass() -> None:
    target = parse_target("https://hooks.example.com/x")

    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.5"]

    with pytest.raises(TargetRefused, match=r"10\.0\.0\.5"):
        await resolve_checked(target, allow_private=False, resolver=mixed)

    async def public(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.com", 443)
        return ["93.184.215.14"]

    address = await resolve_checked(target, allow_private=False, resolver=public)
    pinned = pin(target, address)
    assert str(pinned.url) == "https://93.184.215.14/x"
    assert pinned.host_header == "hooks.example.com"
    assert pinned.sni_hostname == "hooks.example.com"


def test_pinning_keeps_the_port_and_ipv6_host() -> None:
    target = parse_target("http://[2606:4700:4700::1111]:8080/x?y=1")
    pinned = pin(target, ipaddress.ip_address("2606:4700:4700::1111"))
    assert str(pinned.url) == "http://[2606:4700:4700::1111]:8080/x?y=1"
    assert pinned.host_header == "[2606:4700:4700::1111]:8080"
    assert pinned.sni_hostname is None


def test_the_retry_schedule_starts_within_10_seconds_and_spans_over_a_day() -> None:
    rng = random.Random(0)
    delays = [retry_delay(n, rng) for n in range(1, MAX_ATTEMPTS)]
    assert timedelta(seconds=5) <= delays[0] < timedelta(seconds=10)
    assert sum(map(nominal_delay, range(1, MAX_ATTEMPTS)), timedelta()) >= timedelta(hours=27)
    assert nominal_delay(MAX_ATTEMPTS - 1) == timedelta(hours=10)
    assert all(d >= nominal_delay(n) for n, d in enumerate(delays, start=1))
