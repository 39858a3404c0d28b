"""A private CA and a broker certificate for the secured local broker's TLS listener.

``ensure_broker_tls(directory)`` writes, once: ``ca.pem`` (the CA's certificate: what clients
trust, ``M1_KAFKA_SSL_CAFILE``), ``ca.key`` and ``broker.pem`` (the broker's key and its
certificate for ``127.0.0.1`` and ``localhost``, signed by the CA; Kafka reads it as a PEM
keystore). The keys are EC P-256 and readable by their owner only; they never leave the directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825


@dataclass(frozen=True)
class BrokerTls:
    """Where the CA's certificate and the broker's PEM keystore are."""

    ca_file: Path
    keystore: Path


def ensure_broker_tls(directory: Path) -> BrokerTls:
    """The CA and broker certificate files in ``directory``, created if missing."""
    tls = BrokerTls(directory / "ca.pem", directory / "broker.pem")
    if tls.ca_file.exists() and tls.keystore.exists():
        return tls
    ca_key, broker_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m1 local Kafka CA")])
    now = dt.datetime.now(dt.timezone.utc)
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), now)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    broker = (_builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name,
                       broker_key.public_key(), now)
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                          x509.DNSName("localhost")]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    write_private(directory / "ca.key", _pkcs8(ca_key))
    write_private(tls.keystore, _pkcs8(broker_key) + _pem(broker) + _pem(ca))
    tls.ca_file.write_bytes(_pem(ca))
    return tls


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, now: dt.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS)))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path``, readable by its owner only (a key, a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
