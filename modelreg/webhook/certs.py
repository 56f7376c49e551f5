"""A private CA and a serving certificate for the webhook Service (``svc.ns.svc``).

For clusters without cert-manager: ``modelreg webhook certs`` writes ``ca.crt``,
``tls.crt`` and ``tls.key`` (mode 0600) and prints the base64 ``caBundle`` to put in
the webhook configurations. The CA's private key is not kept (nothing else should be
signed with it); rotate by running the command again and updating the caBundle.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelreg._fs import atomic_write

__all__ = ["ServingCerts", "generate", "key_usage", "service_names", "write"]


@dataclass(frozen=True)
class ServingCerts:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def ca_bundle(self) -> str:
        """``caBundle`` for the webhook configuration (base64 of the CA PEM)."""
        return base64.b64encode(self.ca_pem).decode()


def key_usage(*, sign: bool, issue: bool) -> x509.KeyUsage:
    """The KeyUsage extension with only what a certificate needs: ``sign`` for digital
    signatures (a TLS server, a code signer), ``issue`` for certificates and CRLs (a CA).
    (The test suite's CAs use it too.)"""
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=issue,
        crl_sign=issue,
        encipher_only=False,
        decipher_only=False,
    )


def service_names(service: str, namespace: str) -> list[str]:
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def generate(
    service: str,
    namespace: str,
    *,
    days: int = 365,
    extra_names: tuple[str, ...] = (),
    now: dt.datetime | None = None,
) -> ServingCerts:
    now = now or dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(minutes=5)
    end = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"modelreg webhook CA ({namespace})")]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            key_usage(sign=False, issue=True),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for name in (*service_names(service, namespace), *extra_names):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{service}.{namespace}.svc")])
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(sign=True, issue=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ServingCerts(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def write(certs: ServingCerts, directory: str | Path) -> dict[str, str]:
    """Write ca.crt, tls.crt (0644) and tls.key (0600) atomically; returns their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"ca": out / "ca.crt", "cert": out / "tls.crt", "key": out / "tls.key"}
    atomic_write(paths["ca"], certs.ca_pem, mode=0o644)
    atomic_write(paths["key"], certs.key_pem, mode=0o600)
    atomic_write(paths["cert"], certs.cert_pem, mode=0o644)
    return {k: str(v) for k, v in paths.items()}
