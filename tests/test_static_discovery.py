"""Static discovery: code, environment and a watched file that survives bad edits."""

import json
import logging
from pathlib import Path

import pytest

from meshlib import ConfigError, StaticDiscovery
from meshlib.clock import ManualClock
from meshlib.discovery.base import Target


def test_mapping_in_code() -> None:
    d = StaticDiscovery({"users": ["127.0.0.1:8001", "127.0.0.1:8002"]})
    res = d.lookup(Target("users"))
    assert res is not None
    assert [e.address for e in res.endpoints] == ["127.0.0.1:8001", "127.0.0.1:8002"]
    assert d.lookup(Target("orders")) is None
    assert d.declares("users")
    assert "static discovery" in d.describe()


def test_unchanged_lookups_return_the_same_snapshot() -> None:
    d = StaticDiscovery({"users": ["127.0.0.1:8001"]})
    assert d.lookup(Target("users")) is d.lookup(Target("users"))


def _write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data))


def test_json_file_with_weights_and_tags(tmp_path: Path) -> None:
    f = tmp_path / "endpoints.json"
    _write(
        f, {"users": ["127.0.0.1:8001", {"address": "127.0.0.1:8002", "weight": 3, "tags": ["v2"]}]}
    )
    d = StaticDiscovery(file=f)
    res = d.lookup(Target("users"))
    assert res is not None
    assert [e.weight for e in res.endpoints] == [1.0, 3.0]
    tagged = d.lookup(Target("users", tag="v2"))
    assert tagged is not None
    assert [e.address for e in tagged.endpoints] == ["127.0.0.1:8002"]


def test_toml_file(tmp_path: Path) -> None:
    f = tmp_path / "endpoints.toml"
    f.write_text('users = ["127.0.0.1:8001", { address = "127.0.0.1:8002", weight = 2 }]\n')
    res = StaticDiscovery(file=f).lookup(Target("users"))
    assert res is not None
    assert [e.weight for e in res.endpoints] == [1.0, 2.0]


def test_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    clock = ManualClock()
    f = tmp_path / "endpoints.json"
    _write(f, {"users": ["127.0.0.1:8001"]})
    d = StaticDiscovery(file=f, clock=clock, poll_interval=1.0)
    _write(f, {"users": ["127.0.0.1:8001", "127.0.0.1:8002"]})
    res = d.lookup(Target("users"))
    assert res is not None
    assert len(res.endpoints) == 1
    clock.advance(1.0)
    res = d.lookup(Target("users"))
    assert res is not None
    assert len(res.endpoints) == 2


def test_bad_edit_keeps_last_good_set_warns_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    f = tmp_path / "endpoints.json"
    _write(f, {"users": ["127.0.0.1:8001"]})
    d = StaticDiscovery(file=f, clock=clock)
    f.write_text('{"users": [')
    caplog.set_level(logging.INFO, logger="meshlib.discovery")
    for _ in range(3):
        clock.advance(1.0)
        res = d.lookup(Target("users"))
        assert res is not None
        assert [e.address for e in res.endpoints] == ["127.0.0.1:8001"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "keeping the last good endpoints" in warnings[0].getMessage()
    _write(f, {"users": ["127.0.0.1:9001"]})
    clock.advance(1.0)
    res = d.lookup(Target("users"))
    assert res is not None
    assert [e.address for e in res.endpoints] == ["127.0.0.1:9001"]
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_bad_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "endpoints.json"
    f.write_text('{"users": ["nope"]}')
    with pytest.raises(ConfigError, match="MESH_STATIC_FILE") as info:
        StaticDiscovery(file=f)
    assert "nope" in str(info.value)
    with pytest.raises(ConfigError, match="MESH_STATIC_FILE"):
        StaticDiscovery(file=tmp_path / "missing.json")


def test_hostile_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="evil"):
        StaticDiscovery({"users": ["evil\r\nX-Injected: 1:80"]})
    with pytest.raises(ValueError, match="RFC 1123"):
        StaticDiscovery({"users": ["evil\r\nhost:80"]})
    with pytest.raises(ValueError, match="not a valid host name"):
        StaticDiscovery({"../kv": ["127.0.0.1:80"]})
