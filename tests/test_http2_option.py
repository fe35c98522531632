"""``http2=True`` is refused with a clear ConfigError, never silently ignored for mesh hosts.

meshlib reaches mesh endpoints over HTTP/1.1 (its own engine, or httpx's transport under
``MESH_ENGINE=httpx``); accepting the option would promise what does not happen, and without
``h2`` installed httpx would raise ImportError from deep inside the constructor.
"""

import pytest

import meshlib


@pytest.mark.parametrize("cls", [meshlib.MeshClient, meshlib.AsyncMeshClient])
@pytest.mark.parametrize("engine", ["fast", "httpx"])
def test_http2_is_refused_with_a_config_error(cls: type, engine: str) -> None:
    config = meshlib.MeshConfig(engine=engine)
    discovery = meshlib.StaticDiscovery({"users": ["127.0.0.1:8001"]})
    with pytest.raises(meshlib.ConfigError) as info:
        cls(config=config, discovery=discovery, http2=True)
    text = str(info.value)
    assert "http2=True" in text
    assert "HTTP/1.1" in text


@pytest.mark.parametrize("cls", [meshlib.MeshClient, meshlib.AsyncMeshClient])
def test_http2_false_and_http1_true_are_accepted(cls: type) -> None:
    discovery = meshlib.StaticDiscovery({"users": ["127.0.0.1:8001"]})
    client = cls(config=meshlib.MeshConfig(), discovery=discovery, http2=False, http1=True)
    assert client.mesh is not None
