"""A local certificate authority, so ingestion can be served over HTTPS as in Azure.

azure-core sends a bearer token only over HTTPS (BearerTokenCredentialPolicy refuses
plain HTTP), so Entra-authenticated telemetry needs a TLS ingestion endpoint even on
loopback. The stand-in makes its own CA and a certificate for 127.0.0.1 and
`localhost`, and writes a CA bundle (certifi's roots plus this CA) that clients
trust through `REQUESTS_CA_BUNDLE`: the exporter's HTTP client (requests, through
azure-core) reads it on every request. With a state directory the files are kept
there and reused on the next start; otherwise they live in a temporary directory.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "devstack-ca.pem"
BUNDLE_FILE = "ca-bundle.pem"  # certifi's roots + the devstack CA: the value for REQUESTS_CA_BUNDLE
CERT_FILE = "ingestion-cert.pem"
KEY_FILE = "ingestion-key.pem"
_VALIDITY = datetime.timedelta(days=365)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(data)
    if private:
        partial.chmod(0o600)
    partial.replace(path)


class LocalTls:
    """The CA and server certificate in `directory`, made on first use."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def bundle(self) -> Path:
        return self.directory / BUNDLE_FILE

    def ensure(self) -> None:
        """Reuse the files if they are all there and the certificate is still valid, else make new ones."""
        if not self._usable():
            self._generate()

    def server_context(self) -> ssl.SSLContext:
        self.ensure()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.directory / CERT_FILE, self.directory / KEY_FILE)
        return context

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts the stand-in (for tests and tools that use aiohttp)."""
        return ssl.create_default_context(cafile=str(self.bundle))

    def _usable(self) -> bool:
        files = [self.directory / name for name in (CA_FILE, BUNDLE_FILE, CERT_FILE, KEY_FILE)]
        if not all(path.is_file() for path in files):
            return False
        try:
            cert = x509.load_pem_x509_certificate((self.directory / CERT_FILE).read_bytes())
        except ValueError:
            return False
        return cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=1)

    def _generate(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("devstack local CA")
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + _VALIDITY)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        san = x509.SubjectAlternativeName([x509.DNSName("localhost"), loopback])
        cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
                .add_extension(san, critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        ca_pem = ca.public_bytes(serialization.Encoding.PEM)
        # The server key only: the CA's key is not kept, so nothing can be signed with it later.
        _write(self.directory / KEY_FILE, key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()), private=True)
        _write(self.directory / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
        _write(self.directory / CA_FILE, ca_pem)
        _write(self.directory / BUNDLE_FILE, Path(certifi.where()).read_bytes() + b"\n" + ca_pem)
