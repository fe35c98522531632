"""Hostile registry data, judged offline: no address in these tests is ever dialled."""

import pytest

from meshlib.consul.parse import parse_health_entries

# Every one of these reaches 169.254.169.254 through getaddrinfo / inet_aton.
METADATA_SPELLINGS = [
    "169.254.169.254",
    "::ffff:169.254.169.254",
    "::ffff:a9fe:a9fe",
    "[::ffff:a9fe:a9fe]",
    "2852039166",
    "0xa9fea9fe",
    "0XA9FEA9FE",
    "0251.0376.0251.0376",
    "169.254.43518",
    "169.16689662",
    "0xa9.0xfe.0xa9.0xfe",
    "0251.0376.0xa9fe",
    "2852039166.",
    "fe80::1",
]


def _entry(address: str, port: int = 8080, sid: str = "x") -> dict[str, object]:
    return {
        "Node": {"Node": "n1", "Address": "10.0.0.1"},
        "Service": {"ID": sid, "Service": "users", "Address": address, "Port": port},
        "Checks": [],
    }


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_metadata_address_is_refused_in_every_spelling(host: str) -> None:
    parsed = parse_health_entries([_entry(host), _entry("127.0.0.1", sid="good")])
    assert [e.host for e in parsed.endpoints] == ["127.0.0.1"]
    assert len(parsed.rejected) == 1
    assert "'x'" in parsed.rejected[0]
    from meshlib.consul.parse import address_refusal

    assert address_refusal(host) is not None


def test_non_canonical_numeric_hosts_name_the_address_they_mean() -> None:
    from meshlib.endpoint import inet_aton_value, validate_host

    with pytest.raises(ValueError, match=r"spelling of the IPv4 address 127\.0\.0\.1;"):
        validate_host("0x7f.1")
    with pytest.raises(ValueError, match="last label is never all digits"):
        validate_host("08.1.1.1")
    with pytest.raises(ValueError, match="last label is never all digits"):
        validate_host("1.2.3.4.5")
    assert inet_aton_value("2852039166") == inet_aton_value("169.254.43518")
    assert str(inet_aton_value("0251.0376.0251.0376")) == "169.254.169.254"
    assert inet_aton_value("256.1.1.1") is None
    assert inet_aton_value("1.2.3.4.5") is None
    assert inet_aton_value("08.1.1.1") is None
    assert inet_aton_value("users") is None


def test_ordinary_hosts_and_mapped_loopback_are_still_accepted() -> None:
    from meshlib.consul.parse import address_refusal

    for host in ["127.0.0.1", "10.1.2.3", "::1", "users.service.consul", "a1.b2", "node-7"]:
        assert address_refusal(host) is None, host
    assert address_refusal("::ffff:127.0.0.1") is None
    assert address_refusal("::ffff:0.0.0.0") is not None
    assert address_refusal("169.254.169.254", allow_link_local=True) is None
    assert address_refusal("::ffff:a9fe:a9fe", allow_link_local=True) is None
