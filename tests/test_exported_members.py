"""``__all__`` is honest: every public name exists, and every module declares its exports."""

import importlib
import pkgutil

import meshlib

PUBLIC_CONTRACT = {
    "AsyncMeshClient",
    "MeshClient",
    "AsyncMeshTransport",
    "MeshTransport",
    "StaticDiscovery",
    "MeshConfig",
    "MeshError",
    "NoEndpointsAvailable",
    "DeadlineExceeded",
    "RateLimited",
    "DiscoveryError",
    "ConfigError",
}


def test_public_contract_names_are_exported() -> None:
    assert set(meshlib.__all__) >= PUBLIC_CONTRACT


def test_every_exported_name_exists() -> None:
    for name in meshlib.__all__:
        assert hasattr(meshlib, name), name


def test_all_has_no_duplicates() -> None:
    assert len(set(meshlib.__all__)) == len(meshlib.__all__)


def _modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(meshlib.__path__, prefix="meshlib.")
        if not m.name.endswith("__main__")
    ]


def test_every_module_declares_all_and_it_is_true() -> None:
    for name in _modules():
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{name} has no __all__"
        for item in exported:
            assert hasattr(module, item), f"{name}.__all__ names missing {item}"


def test_every_module_docstring_states_its_concern() -> None:
    for name in _modules():
        doc = importlib.import_module(name).__doc__
        assert doc, f"{name} needs a docstring"
        assert len(doc.strip().splitlines()[0]) > 20, f"{name}: first line must state its concern"


def test_errors_subclass_httpx() -> None:
    import httpx

    assert issubclass(meshlib.NoEndpointsAvailable, httpx.ConnectError)
    assert issubclass(meshlib.DeadlineExceeded, httpx.TimeoutException)
    assert issubclass(meshlib.RateLimited, httpx.TransportError)
    assert issubclass(meshlib.DiscoveryError, httpx.TransportError)
    assert issubclass(meshlib.ConfigError, ValueError)
    assert issubclass(meshlib.NoEndpointsAvailable, meshlib.MeshError)
