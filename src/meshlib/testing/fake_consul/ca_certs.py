"""The X.509 half of FakeConsul's Connect CA: EC P-256 keys, root and leaf certificates, PEM.

This is the only module of FakeConsul that imports ``cryptography``, and nothing imports it
until the CA is first used (``connect_ca.load_certs``), so FakeConsul runs without the package
for tests that never touch Connect. Certificates follow Consul's built-in provider: a
self-signed root whose URI SAN is the trust domain, leaves with the service's SPIFFE URI as
their only SAN, ``SubjectKeyId`` the SHA-256 of the DER public key, IDs as colon-hex.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "colon_hex", "issue_leaf", "issue_root"]


@dataclass(frozen=True, slots=True)
class Issued:
    """One certificate with its key, in the forms the API renders."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_pem: str
    key_pem: str
    fingerprint: str  # colon-hex SHA-1 of the DER certificate (a root's ID)
    key_id: str  # colon-hex SubjectKeyId (a root's SigningKeyID)


def colon_hex(data: bytes) -> str:
    """Consul's ``connect.HexString``: lowercase hex bytes joined by colons."""
    return ":".join(f"{b:02x}" for b in data)


def _key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def _finish(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "EC PRIVATE KEY", as Consul emits
        serialization.NoEncryption(),
    ).decode()
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    return Issued(
        cert=cert,
        key=key,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key_pem,
        fingerprint=colon_hex(cert.fingerprint(hashes.SHA1())),  # an ID, as Consul's
        key_id=colon_hex(ski),
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=not ca,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def issue_root(
    serial: int, trust_domain: str, not_before: dt.datetime, not_after: dt.datetime
) -> Issued:
    """A self-signed root for ``trust_domain``, like the built-in provider's primary root."""
    key = ec.generate_private_key(ec.SECP256R1())
    cluster = trust_domain.split(".", 1)[0]
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"pri-{serial:x}.consul.ca.{cluster[:8]}.consul")]
    )
    kid = _key_id(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(kid), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(kid, None, None),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return _finish(cert, key)


def issue_leaf(
    root: Issued,
    serial: int,
    service: str,
    uri: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> Issued:
    """A service leaf signed by ``root``: its SPIFFE ``uri`` as the only SAN, client+server auth."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier(_key_id(key.public_key())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(_key_id(root.key.public_key()), None, None),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .sign(root.key, hashes.SHA256())
    )
    return _finish(cert, key)
