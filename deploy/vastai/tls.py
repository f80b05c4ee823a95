"""The server's self-signed TLS certificate, made here so the Pi can pin it before any connection.

The private key is generated on this machine and reaches the instance only inside the
create request (HTTPS to Vast.ai); the certificate names the instance's public IP, so the
Pi's ordinary verification (``verify=<pinned PEM>``, hostname check on) trusts exactly it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass

SERVER_DNS_NAME = "ai-telephone-server"
"""A fixed DNS name in every certificate, for clients that pin by name instead of address."""


@dataclass(frozen=True)
class ServerCert:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


def generate(ip: str, days: int = 825) -> ServerCert:
    """A fresh P-256 key and a self-signed certificate for ``ip`` (IP SAN) valid ``days`` days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_DNS_NAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)), x509.DNSName(SERVER_DNS_NAME)]),
            critical=False,
        )
        # A self-signed leaf that is its own trust anchor: CA true, no path below it.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, crl_sign=False, encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # Python 3.13's strict X.509 checks want an AKI even on a self-signed certificate.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ServerCert(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def ip_addresses(cert_pem: bytes) -> list[str]:
    """The IP addresses a certificate is valid for."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(a) for a in san.get_values_for_type(x509.IPAddress)]


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 fingerprint of the certificate, colon-separated hex (as `openssl x509 -fingerprint`)."""
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii"))
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
