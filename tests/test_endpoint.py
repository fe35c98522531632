"""Endpoint parsing and validation: registry and config data is input."""

import pytest

from meshlib.endpoint import Endpoint, parse_endpoint


def test_parse_ipv4_ipv6_and_names() -> None:
    assert parse_endpoint("127.0.0.1:8001").address == "127.0.0.1:8001"
    assert parse_endpoint("[::1]:80").host == "::1"
    assert parse_endpoint("[::1]:80").address == "[::1]:80"
    assert parse_endpoint("users-1.internal:443").port == 443


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "must look like host:port"),
        ("127.0.0.1:http", "not a number"),
        ("127.0.0.1:0", r"within \[1, 65535\]"),
        ("127.0.0.1:70000", r"within \[1, 65535\]"),
        ("::1:80", "IPv6"),
        ("bad_host!:80", "RFC 1123"),
        ("evil\r\nhost:80", "RFC 1123"),
        ("[::1:80", r"\[ipv6\]:port"),
    ],
)
def test_bad_endpoints_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_endpoint(text)


def test_weights_must_be_positive_and_finite() -> None:
    with pytest.raises(ValueError, match="> 0"):
        Endpoint(host="127.0.0.1", port=80, weight=0)
    with pytest.raises(ValueError, match="finite"):
        Endpoint(host="127.0.0.1", port=80, weight=float("inf"))
