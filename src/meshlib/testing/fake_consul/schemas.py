"""The ``?filter=`` selectors each endpoint accepts, as listed in Consul's health and catalog docs.

A schema names the fields of the *rendered* entry a filter runs on, with their types, so that
selectors are validated when the filter is compiled and values are converted to the field's type
(``Service.Port == 8080`` compares integers, ``ServiceEnableTagOverride == true`` booleans).
"""

from __future__ import annotations

from meshlib.traffic.bexpr import BOOL, INT, STRING, ListOf, MapOf, Struct

__all__ = [
    "AGENT_SERVICE",
    "CATALOG_SERVICE",
    "HEALTH_CHECK",
    "HEALTH_ENTRY",
    "NODE",
    "NODE_SERVICE",
]

_SERVICE_ADDRESS = Struct({"Address": STRING, "Port": INT})
_WEIGHTS = Struct({"Passing": INT, "Warning": INT})
_UPSTREAM = Struct(
    {
        "DestinationType": STRING,
        "DestinationNamespace": STRING,
        "DestinationName": STRING,
        "Datacenter": STRING,
        "LocalBindAddress": STRING,
        "LocalBindPort": INT,
    }
)
_PROXY = Struct(
    {
        "DestinationServiceName": STRING,
        "DestinationServiceID": STRING,
        "LocalServiceAddress": STRING,
        "LocalServicePort": INT,
        "Mode": STRING,
        "Upstreams": ListOf(_UPSTREAM),
    }
)
_CONNECT = Struct({"Native": BOOL})

NODE = Struct(
    {
        "ID": STRING,
        "Node": STRING,
        "Address": STRING,
        "Datacenter": STRING,
        "TaggedAddresses": MapOf(STRING),
        "Meta": MapOf(STRING),
    }
)

NODE_SERVICE = Struct(
    {
        "Kind": STRING,
        "ID": STRING,
        "Service": STRING,
        "Tags": ListOf(STRING),
        "Address": STRING,
        "TaggedAddresses": MapOf(_SERVICE_ADDRESS),
        "Meta": MapOf(STRING),
        "Port": INT,
        "SocketPath": STRING,
        "Weights": _WEIGHTS,
        "EnableTagOverride": BOOL,
        "Proxy": _PROXY,
        "Connect": _CONNECT,
        "PeerName": STRING,
    }
)

HEALTH_CHECK = Struct(
    {
        "Node": STRING,
        "CheckID": STRING,
        "Name": STRING,
        "Status": STRING,
        "Notes": STRING,
        "Output": STRING,
        "ServiceID": STRING,
        "ServiceName": STRING,
        "ServiceTags": ListOf(STRING),
        "Type": STRING,
        "Interval": STRING,
        "Timeout": STRING,
        "ExposedPort": INT,
        "PeerName": STRING,
    }
)

HEALTH_ENTRY = Struct({"Node": NODE, "Service": NODE_SERVICE, "Checks": ListOf(HEALTH_CHECK)})

CATALOG_SERVICE = Struct(
    {
        "ID": STRING,
        "Node": STRING,
        "Address": STRING,
        "Datacenter": STRING,
        "TaggedAddresses": MapOf(STRING),
        "NodeMeta": MapOf(STRING),
        "ServiceKind": STRING,
        "ServiceID": STRING,
        "ServiceName": STRING,
        "ServiceTags": ListOf(STRING),
        "ServiceAddress": STRING,
        "ServiceTaggedAddresses": MapOf(_SERVICE_ADDRESS),
        "ServiceWeights": _WEIGHTS,
        "ServiceMeta": MapOf(STRING),
        "ServicePort": INT,
        "ServiceSocketPath": STRING,
        "ServiceEnableTagOverride": BOOL,
        "ServiceProxy": _PROXY,
        "ServiceConnect": _CONNECT,
    }
)

AGENT_SERVICE = Struct(
    {
        "Kind": STRING,
        "ID": STRING,
        "Service": STRING,
        "Tags": ListOf(STRING),
        "Meta": MapOf(STRING),
        "Port": INT,
        "Address": STRING,
        "SocketPath": STRING,
        "TaggedAddresses": MapOf(_SERVICE_ADDRESS),
        "Weights": _WEIGHTS,
        "EnableTagOverride": BOOL,
        "Proxy": _PROXY,
        "Connect": _CONNECT,
        "Datacenter": STRING,
    }
)
