"""Throwaway certificates for the TLS tests, made with the `cryptography` package: a CA, a
server certificate for localhost and 127.0.0.1, and client certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(directory: Path, stem: str, key: ec.EllipticCurvePrivateKey,
           cert: x509.Certificate) -> None:
    (directory / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class CA:
    """A certificate authority in ``directory`` (ca.crt, ca.key) that signs leaves there."""

    directory: Path
    name: str = "kpi-test-ca"

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(self.name)).issuer_name(_name(self.name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        _write(self.directory, "ca", self.key, self.cert)

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def leaf(self, stem: str, cn: str, sans: list[x509.GeneralName], server: bool) -> Path:
        """Writes STEM.crt and STEM.key; returns the certificate's path."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256()))
        _write(self.directory, stem, key, cert)
        return self.directory / f"{stem}.crt"

    def server(self, stem: str = "server") -> Path:
        """A server certificate for localhost and 127.0.0.1."""
        return self.leaf(stem, "localhost", [
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
            server=True)

    def client(self, stem: str = "client", san: str = "client.example") -> Path:
        """A client certificate with one DNS SAN."""
        return self.leaf(stem, stem, [x509.DNSName(san)], server=False)


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number
