"""FakeConsul's building blocks: Go durations and booleans, bexpr, decoding, KV index rules."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest

import meshlib.testing.fake_consul as package
from meshlib.testing.fake_consul.decode import DecodeError, Fields, decode_service_def
from meshlib.testing.fake_consul.kvstore import KVStore
from meshlib.traffic.bexpr import (
    INT,
    STRING,
    FilterError,
    ListOf,
    MapOf,
    Struct,
    compile_filter,
)
from meshlib.traffic.durations import (
    format_go_duration,
    parse_go_bool,
    parse_go_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("5m", 300.0),
        ("1m30s", 90.0),
        ("100ms", 0.1),
        ("1.5h", 5400.0),
        ("0", 0.0),
        ("300us", 0.0003),
        ("2\u00b5s", 0.000002),
        ("-2s", -2.0),
        (".5s", 0.5),
        ("1h2m3s4ms", 3723.004),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "1x", "1 s", "1s2", "--1s", "1.2.3s"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="time: invalid duration"):
        parse_go_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (10, "10s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (5400, "1h30m0s"),
        (0.1, "100ms"),
        (0.0015, "1.5ms"),
        (1.5, "1.5s"),
        (0.000001, "1\u00b5s"),
        (1e-9, "1ns"),
        (-2, "-2s"),
    ],
)
def test_format_go_duration(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


def test_parse_go_bool() -> None:
    for text in ("1", "t", "T", "TRUE", "true", "True"):
        assert parse_go_bool(text) is True
    for text in ("0", "f", "F", "FALSE", "false", "False"):
        assert parse_go_bool(text) is False
    for text in ("yes", "", "tRUE", "on"):
        with pytest.raises(ValueError, match="invalid syntax"):
            parse_go_bool(text)


SCHEMA = Struct(
    {
        "Name": STRING,
        "Port": INT,
        "Tags": ListOf(STRING),
        "Meta": MapOf(STRING),
        "Items": ListOf(Struct({"Status": STRING, "Tags": ListOf(STRING)})),
    }
)
DOC: dict[str, Any] = {
    "Name": "web.prod",
    "Port": 80,
    "Tags": ["a", "b"],
    "Meta": {"team.x": "core", "env": ""},
    "Items": [{"Status": "passing", "Tags": []}, {"Status": "critical", "Tags": ["t"]}],
}


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("Name == `web.prod`", True),
        ('Name == "web.prod"', True),
        ("Name == web.prod", True),
        ("Port == 80", True),
        ("Port != 80", False),
        ('Meta["team.x"] == core', True),
        ("Meta.env is empty", True),
        ("Meta.missing == ``", True),
        ("Meta.missing is empty", True),
        ("Name contains prod", True),
        ('"pro" in Name', True),
        ("Items.Status == critical", True),
        ("Items.Status != warning", True),
        ("warn not in Items.Status", True),
        ("Items.Tags contains t", True),
        ("Items.Tags is empty", True),
        ("Items is not empty", True),
        ("Tags is empty or not (Port == 80 and a in Tags)", False),
        ("not not Name matches `^web`", True),
        ('Name matches "\\\\.prod$"', True),
        ("NOT_A_KEYWORD == 1 or Port == 80", None),
    ],
)
def test_bexpr(expression: str, result: bool | None) -> None:
    if result is None:
        with pytest.raises(FilterError, match="is not valid"):
            compile_filter(expression, SCHEMA)
        return
    assert compile_filter(expression, SCHEMA)(DOC) is result


@pytest.mark.parametrize(
    "expression",
    [
        "Port == x",
        "Name ==",
        "== 1",
        "(Port == 80",
        "Port == 80 )",
        "Name matches `(`",
        "Port is empty",
        '"x',
        "Tags == a",
    ],
)
def test_bexpr_rejects(expression: str) -> None:
    with pytest.raises(FilterError):
        compile_filter(expression, SCHEMA)


def test_decode_service_definition_aliases_and_errors() -> None:
    defn = decode_service_def(
        Fields(
            {"name": "a", "SERVICE_ID": "ignored", "Check": {"args": ["x"], "interval": 10}}, "S"
        )
    )
    assert (defn.id, defn.checks[0].script_args, defn.checks[0].interval) == ("a", ["x"], 1e-8)
    with pytest.raises(DecodeError, match="cannot unmarshal bool"):
        decode_service_def(Fields({"Name": "a", "Port": True}, "S"))
    with pytest.raises(DecodeError, match="cannot unmarshal array"):
        Fields([], "S")
    with pytest.raises(ValueError, match="reserved for internal use"):
        decode_service_def(Fields({"Name": "a", "Meta": {"consul-x": "1"}}, "S"))


def test_kv_indexes_follow_consul() -> None:
    kv = KVStore()
    counter = iter(range(1, 100))

    def alloc() -> int:
        return next(counter)

    assert kv.index_for_key("a") == 0
    kv.put("a/1", b"x", flags=0, cas=None, alloc=alloc)
    kv.put("b", b"y", flags=0, cas=None, alloc=alloc)
    assert kv.index_for_key("a/1") == 1
    assert kv.index_for_key("missing") == 2  # the table index
    assert kv.index_for_prefix("a/") == 1
    kv.delete("a/1", recurse=False, cas=None, alloc=alloc)
    assert kv.index_for_prefix("a/") == 3  # the tombstone counts
    assert kv.index_for_prefix("zzz") == 3  # nothing under it: the table index
    assert kv.delete("gone", recurse=False, cas=5, alloc=alloc) is True
    assert kv.delete("b", recurse=False, cas=0, alloc=alloc) is False


def test_every_module_has_all_and_a_docstring() -> None:
    names = [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
    names.append("meshlib.testing.pytest_plugin")
    for name in names:
        module = importlib.import_module(name)
        assert module.__doc__, name
        assert len(module.__doc__.splitlines()[0]) > 20, name
        for item in module.__all__:
            assert hasattr(module, item), f"{name}.{item}"
