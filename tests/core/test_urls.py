"""check_url: live mode refuses internal addresses in every spelling a resolver accepts."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kassa.core.urls import MAX_URL_LENGTH, UrlError, check_url

INTERNAL_V4 = [ipaddress.IPv4Network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local (cloud metadata lives at 169.254.169.254)
    "100.64.0.0/10",  # carrier-grade NAT
    "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host
)]
# Blocks handed out to public networks (Google, Cloudflare/APNIC, Fastly, Akamai ...).
PUBLIC_V4 = [ipaddress.IPv4Network(n) for n in (
    "8.0.0.0/9", "1.1.1.0/24", "151.101.0.0/16", "23.0.0.0/12", "140.82.112.0/20",
)]
SPELLINGS = ["dotted", "decimal", "hex", "hex_upper", "octal", "hex_octets", "short2", "short3",
             "mapped", "mapped_hex", "trailing_dot"]


def spell(addr: ipaddress.IPv4Address, how: str) -> str:
    """The host part of a URL naming `addr`, spelled `how` (inet_aton and RFC 4291 forms)."""
    value = int(addr)
    a, b, c, d = addr.packed
    if how == "dotted":
        return str(addr)
    if how == "decimal":
        return str(value)
    if how == "hex":
        return f"0x{value:08x}"
    if how == "hex_upper":
        return f"0X{value:X}"
    if how == "octal":
        return ".".join(f"0{o:o}" for o in (a, b, c, d))
    if how == "hex_octets":
        return ".".join(f"0x{o:x}" for o in (a, b, c, d))
    if how == "short2":  # a.bcd: the last part fills the low 24 bits
        return f"{a}.{value & 0xFFFFFF}"
    if how == "short3":  # a.b.cd: the last part fills the low 16 bits
        return f"{a}.{b}.{value & 0xFFFF}"
    if how == "mapped":
        return f"[::ffff:{addr}]"
    if how == "mapped_hex":
        return f"[::ffff:{value >> 16:x}:{value & 0xFFFF:x}]"
    if how == "trailing_dot":
        return f"{addr}."
    raise AssertionError(how)


def addresses_in(networks: list[ipaddress.IPv4Network]) -> st.SearchStrategy[ipaddress.IPv4Address]:
    return st.sampled_from(networks).flatmap(
        lambda net: st.integers(min_value=int(net.network_address),
                                max_value=int(net.broadcast_address)).map(ipaddress.IPv4Address))


internal_addresses = addresses_in(INTERNAL_V4)
public_addresses = addresses_in(PUBLIC_V4)
spellings = st.sampled_from(SPELLINGS)
paths = st.sampled_from(["/", "/hook", "/a/b?x=1", ":8443/cb", ":443/", ""])


def rejected(url: str, *, live: bool) -> bool:
    try:
        assert check_url(url, live=live, field="callback_url") == url
    except UrlError as exc:
        assert "callback_url" in str(exc)
        return True
    return False


def test_spellings_name_the_same_address() -> None:
    """The spellings really are the address, as the C resolver reads them (self-check)."""
    addr = ipaddress.IPv4Address("10.1.2.3")
    for how in SPELLINGS:
        host = spell(addr, how).strip("[]").rstrip(".")
        if how.startswith("mapped"):
            assert ipaddress.IPv6Address(host).ipv4_mapped == addr
        else:
            assert socket.inet_aton(host) == addr.packed, how


@given(addr=internal_addresses, how=spellings, path=paths)
@example(addr=ipaddress.IPv4Address("127.0.0.1"), how="octal", path="/")  # 0177.00.00.01
@example(addr=ipaddress.IPv4Address("127.0.0.1"), how="decimal", path="/")  # 2130706433
@example(addr=ipaddress.IPv4Address("127.0.0.1"), how="hex", path="/")  # 0x7f000001
@example(addr=ipaddress.IPv4Address("127.0.0.1"), how="short2", path="/")  # 127.1
@example(addr=ipaddress.IPv4Address("169.254.169.254"), how="mapped", path="/latest")
@example(addr=ipaddress.IPv4Address("10.0.0.1"), how="hex_octets", path=":8443/cb")
@example(addr=ipaddress.IPv4Address("0.0.0.0"), how="decimal", path="/")
def test_live_rejects_every_spelling_of_internal_addresses(addr: ipaddress.IPv4Address,
                                                           how: str, path: str) -> None:
    url = f"https://{spell(addr, how)}{path}"
    assert rejected(url, live=True), url
    # The same URL is fine in test mode over http (test mode allows loopback and http).
    assert not rejected(f"http://{spell(addr, how)}{path}", live=False)


@given(addr=public_addresses, how=spellings, path=paths)
@example(addr=ipaddress.IPv4Address("8.8.8.8"), how="dotted", path="/")
@example(addr=ipaddress.IPv4Address("8.8.8.8"), how="decimal", path="/")  # 134744072
@example(addr=ipaddress.IPv4Address("8.8.8.8"), how="hex", path="/")
@example(addr=ipaddress.IPv4Address("8.8.8.8"), how="octal", path="/")  # 010.010.010.010
@example(addr=ipaddress.IPv4Address("8.8.8.8"), how="mapped", path="/")
@example(addr=ipaddress.IPv4Address("1.1.1.1"), how="dotted", path="/hook")
def test_live_accepts_public_literal_addresses_over_https(addr: ipaddress.IPv4Address,
                                                          how: str, path: str) -> None:
    url = f"https://{spell(addr, how)}{path}"
    assert not rejected(url, live=True), url
    # ... but never over plain http in live mode.
    assert rejected(f"http://{spell(addr, how)}{path}", live=True)


@pytest.mark.parametrize("host", [
    "localhost", "LOCALHOST", "localhost.", "api.localhost", "a.b.localhost",
    "metadata.google.internal", "metadata", "instance-data", "METADATA.GOOGLE.INTERNAL.",
    "[::1]", "[0:0:0:0:0:0:0:1]", "[::]", "[fe80::1]", "[fc00::1]", "[fd12:3456::1]",
    "[fec0::1]", "[ff02::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
    "100.100.100.200", "224.0.0.1", "255.255.255.255", "240.0.0.1", "0",
])
def test_live_rejects_internal_hosts_and_ipv6(host: str) -> None:
    assert rejected(f"https://{host}/cb", live=True)
    assert rejected(f"https://{host}:8443/cb", live=True)


@pytest.mark.parametrize("url", [
    "https://merchant.example/webhooks/payment",
    "https://your-app.com/payment/success",
    "https://8.8.8.8/",
    "https://[2606:4700:4700::1111]/hook",
    "https://[::ffff:8.8.8.8]/",
    "https://api.example.com:8443/hooks?x=1#frag",
    "HTTPS://Merchant.Example/Path",
])
def test_live_accepts_public_https_urls(url: str) -> None:
    assert not rejected(url, live=True)


@pytest.mark.parametrize("url", [
    "http://merchant.example/webhooks/payment", "http://8.8.8.8/", "http://[2606:4700::1]/"])
def test_live_rejects_http(url: str) -> None:
    assert rejected(url, live=True)
    assert not rejected(url, live=False)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/cb", "http://localhost/cb", "http://[::1]:9000/",
    "http://10.0.0.5/hook", "https://localhost/cb", "http://2130706433/",
])
def test_test_mode_allows_http_and_loopback(url: str) -> None:
    assert not rejected(url, live=False)
    assert rejected(url, live=True)


@pytest.mark.parametrize("url", [
    "ftp://merchant.example/x", "file:///etc/passwd", "javascript:alert(1)", "gopher://h/",
    "data:text/plain,hi", "ws://merchant.example/", "wss://merchant.example/",
    "mailto:a@b.example", "//merchant.example/path", "merchant.example/path", "/relative",
    "https://", "https:///path", "", "https://user:pw@merchant.example/",
    "https://user@merchant.example/", "https://merchant.example/a b", "https://[::1/",
    "https://merchant.example:99999/", "https://merchant.example:port/",
])
@pytest.mark.parametrize("live", [True, False])
def test_non_http_and_malformed_urls_are_rejected_in_both_modes(url: str, live: bool) -> None:
    assert rejected(url, live=live)


@given(scheme=st.from_regex(r"[a-z][a-z0-9+.-]{0,9}", fullmatch=True), live=st.booleans())
def test_only_http_and_https_schemes_pass(scheme: str, live: bool) -> None:
    url = f"{scheme}://merchant.example/cb"
    expected_ok = scheme == "https" or (scheme == "http" and not live)
    assert rejected(url, live=live) != expected_ok


@pytest.mark.parametrize("live", [True, False])
def test_length_limit_is_2048_characters(live: bool) -> None:
    base = "https://merchant.example/"
    exact = base + "a" * (MAX_URL_LENGTH - len(base))
    assert len(exact) == MAX_URL_LENGTH == 2048
    assert not rejected(exact, live=live)
    assert rejected(exact + "a", live=live)
    assert rejected(base + "a" * 100_000, live=live)


@given(extra=st.integers(min_value=1, max_value=5000), live=st.booleans())
def test_any_url_over_2048_characters_is_rejected(extra: int, live: bool) -> None:
    base = "https://merchant.example/?q="
    url = base + "x" * (MAX_URL_LENGTH - len(base) + extra)
    assert rejected(url, live=live)


@pytest.mark.parametrize("host", ["[2002:a01:203::1]", "[2002:7f00:1::1]",
                                  "[2001:0:4136:e378:8000:63bf:f5ff:fffe]"])
def test_live_rejects_v6_addresses_that_wrap_internal_v4(host: str) -> None:
    # 6to4 of 10.1.2.3 and 127.0.0.1; Teredo whose client address is 10.0.0.1.
    with pytest.raises(UrlError):
        check_url(f"https://{host}/cb", live=True, field="callback_url")
