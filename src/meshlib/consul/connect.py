"""The local agent's Connect endpoints: CA roots, this service's leaf, and authorization.

py-consul forms the paths but gives the CA reads no blocking-query parameters, so the reads go
through its HTTP client with ``index``/``wait`` added; answers are checked for the fields meshlib
relies on before anyone uses them. An agent with Connect disabled answers these endpoints with
an error: that becomes a ``ConnectUnavailable`` that says what to enable, never a hang.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import consul
from consul.callback import CB

from meshlib.consul.http import async_consul
from meshlib.consul.parse import foreign
from meshlib.consul.settings import ConsulSettings
from meshlib.errors import DiscoveryError

__all__ = ["ConnectAgent", "ConnectUnavailable", "Leaf", "Roots"]


class ConnectUnavailable(DiscoveryError):
    """The agent cannot serve Connect: disabled, unknown endpoint, or a malformed answer."""


@dataclass(frozen=True, slots=True)
class Roots:
    """``/v1/agent/connect/ca/roots``: the trusted roots (active one first) and the trust domain."""

    index: int
    trust_domain: str
    active_id: str
    pems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Leaf:
    """``/v1/agent/connect/ca/leaf/<service>``: this service's certificate and key (PEM)."""

    index: int
    service: str
    uri: str
    serial: str
    cert_pem: str
    key_pem: str
    valid_before: str
    valid_after: str

    def __repr__(self) -> str:  # never the key
        return f"Leaf(service={self.service!r}, uri={self.uri!r}, serial={self.serial!r})"


def _unavailable(what: str, exc: BaseException) -> ConnectUnavailable:
    return ConnectUnavailable(
        f"the Consul agent could not serve {what}: {foreign(exc)} (is Connect enabled on the "
        "agent, `connect { enabled = true }`, and may this token read it?)"
    )


def _str(doc: dict[str, Any], key: str, what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise ConnectUnavailable(f"the agent's {what} has no {key}")
    return value


class ConnectAgent:
    """The Connect endpoints of the local agent, as coroutines with blocking queries."""

    def __init__(self, settings: ConsulSettings, *, wait: str = "5m") -> None:
        self._consul = async_consul(settings, timeout=660.0)
        self._wait = wait
        self.address = settings.address

    async def _get(self, path: str, index: int, what: str) -> tuple[int, dict[str, Any]]:
        params = [("index", str(max(index, 0))), ("wait", self._wait)] if index else []
        try:
            got_index, doc = await self._consul.http.get(
                CB.json(index=True, allow_404=False),
                path,
                params=params,
                headers=self._consul.prepare_headers(),
            )
        except (consul.ConsulException, ValueError) as exc:
            raise _unavailable(what, exc) from None
        if not isinstance(doc, dict):
            raise ConnectUnavailable(f"the agent's {what} is not a JSON object")
        try:
            new_index = int(got_index)
        except (TypeError, ValueError):
            new_index = 0
        return (new_index if new_index >= 1 else 1), doc

    async def roots(self, index: int = 0) -> Roots:
        """The CA roots; with ``index``, blocks until they change (or ``wait`` passes)."""
        got, doc = await self._get("/v1/agent/connect/ca/roots", index, "Connect CA roots")
        active = _str(doc, "ActiveRootID", "CA roots")
        pems: list[str] = []
        for root in doc.get("Roots") or ():
            if isinstance(root, dict) and isinstance(root.get("RootCert"), str):
                pem = root["RootCert"] + "".join(
                    c for c in root.get("IntermediateCerts") or () if isinstance(c, str)
                )
                if root.get("ID") == active:
                    pems.insert(0, pem)
                else:
                    pems.append(pem)
        if not pems:
            raise ConnectUnavailable("the agent's CA roots list no root certificate")
        return Roots(got, _str(doc, "TrustDomain", "CA roots"), active, tuple(pems))

    async def leaf(self, service: str, index: int = 0) -> Leaf:
        """This service's leaf certificate; with ``index``, blocks until it is re-issued."""
        what = f"a Connect leaf certificate for {service!r}"
        got, doc = await self._get(f"/v1/agent/connect/ca/leaf/{service}", index, what)
        return Leaf(
            index=got,
            service=_str(doc, "Service", what),
            uri=_str(doc, "ServiceURI", what),
            serial=_str(doc, "SerialNumber", what),
            cert_pem=_str(doc, "CertPEM", what),
            key_pem=_str(doc, "PrivateKeyPEM", what),
            valid_before=_str(doc, "ValidBefore", what),
            valid_after=str(doc.get("ValidAfter") or ""),
        )

    async def authorize(self, target: str, client_uri: str, client_serial: str) -> tuple[bool, str]:
        """Whether the caller with ``client_uri`` may call ``target``, and Consul's reason."""
        body = json.dumps(
            {"Target": target, "ClientCertURI": client_uri, "ClientCertSerial": client_serial}
        )
        try:
            doc = await self._consul.http.post(
                CB.json(allow_404=False),
                "/v1/agent/connect/authorize",
                data=body,
                headers=self._consul.prepare_headers(),
            )
        except (consul.ConsulException, ValueError) as exc:
            raise _unavailable("an intention check", exc) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("Authorized"), bool):
            raise ConnectUnavailable("the agent's authorize answer has no Authorized field")
        return doc["Authorized"], foreign(doc.get("Reason") or "")

    async def aclose(self) -> None:
        await self._consul.http.close()
