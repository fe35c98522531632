"""Connect's mutual TLS pieces: SPIFFE IDs, in-memory contexts, peer identity, server rotation.

Real handshakes on 127.0.0.1 between certificates of a throwaway Connect-style CA.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytest.importorskip("cryptography")

from _connect_certs import TRUST_DOMAIN, ThrowawayCA
from meshlib.connect.identity import SpiffeID, parse_spiffe_id
from meshlib.connect.tls import (
    RotatingServerContext,
    client_context,
    peer_uris,
    server_context,
)


def test_spiffe_ids_parse_and_format() -> None:
    uri = f"spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/users"
    sid = parse_spiffe_id(uri)
    assert sid == SpiffeID(trust_domain=TRUST_DOMAIN, datacenter="dc1", service="users")
    assert sid is not None
    assert sid.uri == uri
    ap = parse_spiffe_id(f"spiffe://{TRUST_DOMAIN}/ap/team/ns/ns1/dc/dc2/svc/orders")
    assert ap is not None
    assert (ap.partition, ap.namespace, ap.service) == ("team", "ns1", "orders")
    assert ap.uri.endswith("/ap/team/ns/ns1/dc/dc2/svc/orders")
    assert sid.same_service(
        SpiffeID(trust_domain=TRUST_DOMAIN.upper(), datacenter="dc9", service="users")
    )
    assert not sid.same_service(
        SpiffeID(trust_domain="other.consul", datacenter="dc1", service="users")
    )
    for bad in (
        "https://x/ns/default/dc/dc1/svc/u",
        f"spiffe://{TRUST_DOMAIN}/agent/client/dc/dc1/id/x",
        "",
    ):
        assert parse_spiffe_id(bad) is None


@contextmanager
def _server(ctx: ssl.SSLContext) -> Iterator[tuple[int, list[object]]]:
    """A loopback TLS server: each connection's handshake result (peer cert or error) is kept."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(0.2)
    results: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = lsock.accept()
            except (TimeoutError, OSError):
                continue
            raw.settimeout(5)
            try:
                with ctx.wrap_socket(raw, server_side=True) as tls:
                    results.append(tls.getpeercert())
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                results.append(exc)
                raw.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield lsock.getsockname()[1], results
    finally:
        stop.set()
        t.join(5)
        lsock.close()


def _connect(port: int, ctx: ssl.SSLContext) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            assert tls.recv(2) == b"ok"
            cert = tls.getpeercert()
            assert cert is not None
            return dict(cert)


def test_mutual_tls_with_in_memory_contexts_and_peer_identity() -> None:
    ca = ThrowawayCA()
    users, web = ca.leaf("users"), ca.leaf("web")
    with _server(server_context(users.cert_pem, users.key_pem, [ca.pem])) as (port, seen):
        cert = _connect(port, client_context(web.cert_pem, web.key_pem, [ca.pem]))
    assert peer_uris(cert) == [users.uri]  # the client sees the server's identity
    assert isinstance(seen[0], dict)
    assert peer_uris(seen[0]) == [web.uri]  # and vice versa


def test_server_refuses_a_client_without_a_certificate() -> None:
    ca = ThrowawayCA()
    users = ca.leaf("users")
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    plain.check_hostname = False
    plain.load_verify_locations(cadata=ca.pem)
    with _server(server_context(users.cert_pem, users.key_pem, [ca.pem])) as (port, seen):
        with pytest.raises((ssl.SSLError, OSError)):
            _connect(port, plain)
    assert seen
    assert isinstance(seen[0], ssl.SSLError)


@pytest.mark.parametrize("case", ["foreign-root", "expired-leaf"])
def test_client_refuses_a_server_it_cannot_trust(case: str) -> None:
    ca, other = ThrowawayCA(), ThrowawayCA("Another CA")
    web = ca.leaf("web")
    bad = other.leaf("users") if case == "foreign-root" else ca.leaf("users", expired=True)
    with _server(server_context(bad.cert_pem, bad.key_pem, [ca.pem, other.pem])) as (port, _):
        with pytest.raises(ssl.SSLCertVerificationError):
            _connect(port, client_context(web.cert_pem, web.key_pem, [ca.pem]))


def test_server_context_follows_rotation_without_a_restart() -> None:
    ca = ThrowawayCA()
    first, second, web = ca.leaf("users"), ca.leaf("users"), ca.leaf("web")
    rotating = RotatingServerContext(first.cert_pem, first.key_pem, [ca.pem])
    new_root = ThrowawayCA("Rotated root")
    third = new_root.leaf("users")
    with _server(rotating.context) as (port, _):  # the server keeps the object it was given
        client = client_context(web.cert_pem, web.key_pem, [ca.pem, new_root.pem])
        assert int(_connect(port, client)["serialNumber"], 16) == first.serial  # type: ignore[arg-type]
        rotating.update(second.cert_pem, second.key_pem, [ca.pem])
        assert int(_connect(port, client)["serialNumber"], 16) == second.serial  # type: ignore[arg-type]
        rotating.update(third.cert_pem, third.key_pem, [ca.pem, new_root.pem])
        assert int(_connect(port, client)["serialNumber"], 16) == third.serial  # type: ignore[arg-type]
