"""A private Sigstore for tests: no staging, no production, no internet.

:class:`FakeSigstore` plays the three services a keyless signature relies on,
with keys generated here:

* a Fulcio-like CA issuing short-lived code-signing certificates whose SAN is
  the OIDC identity, with the issuer in the Fulcio extensions
  (1.3.6.1.4.1.57264.1.1 raw, 1.3.6.1.4.1.57264.1.8 DER UTF8String);
* a CT log whose key signs an RFC 6962 precertificate SCT embedded in each
  certificate (``tbs_precertificate_bytes`` + the issuer's key id);
* a Rekor-like transparency log (RFC 6962 Merkle tree over canonicalised
  ``dsse/0.0.1`` entry bodies) producing inclusion proofs, signed checkpoints
  (signed notes, key hint = the log id's first 4 bytes) and signed entry
  timestamps over the RFC 8785 form of ``{body, integratedTime, logID, logIndex}``.

It writes the ``trusted_root.json`` that sigstore-python's real ``Verifier``
loads, and either mints keyless bundles directly (:meth:`keyless_bundle`,
deterministic when seeded: used for golden files) or serves small
Fulcio (``POST /api/v2/signingCert``) and Rekor (``POST /api/v1/log/entries``)
endpoints on loopback that sigstore-python's ``Signer`` talks to
(:meth:`serve`, :meth:`client_trust_config`).

Knobs on :meth:`issue_certificate` and :meth:`keyless_bundle` produce the
broken material SECURITY.md cases 13-15 need (expired certificate, no EKU, CA
flag, SCT from an unknown log, bad proofs...).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from modelreg.webhook.certs import key_usage

UTC = dt.UTC
OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_V02 = "application/vnd.dev.sigstore.bundle+json;version=0.2"
INTOTO = "application/vnd.in-toto+json"
EPOCH_START = dt.datetime(2024, 1, 1, tzinfo=UTC)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(spki_der(key)).digest()


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_utf8(text: str) -> bytes:
    raw = text.encode()
    return b"\x0c" + _der_len(len(raw)) + raw


def der_octet_string(raw: bytes) -> bytes:
    return b"\x04" + _der_len(len(raw)) + raw


# ------------------------------------------------------------------ Merkle tree


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def tree_hash(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH over leaf *hashes*."""
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


def inclusion_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 PATH(m, D[n]): sibling hashes from the leaf upwards."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_path(index, leaves[:k]), tree_hash(leaves[k:])]
    return [*inclusion_path(index - k, leaves[k:]), tree_hash(leaves[:k])]


# ------------------------------------------------------------------- the fake


@dataclass
class Tamper:
    """Ways to break a minted bundle (each should make verification fail)."""

    sct_log_key: ec.EllipticCurvePrivateKey | None = None  # SCT signed by an unknown log
    no_sct: bool = False
    bad_inclusion_proof: bool = False
    bad_checkpoint_signature: bool = False
    bad_set: bool = False
    no_inclusion_promise: bool = False
    integrated_time_offset: int | None = None  # seconds after not_before
    entry_payload: bytes | None = None  # the log entry records another payload
    checkpoint_root: bytes | None = None


@dataclass
class LogEntry:
    index: int
    body: bytes
    integrated_time: int


@dataclass
class FakeSigstore:
    seed: int | None = None
    origin: str = "rekor.modelreg.test - 1"
    ca_key: ec.EllipticCurvePrivateKey = field(init=False)
    ca_cert: x509.Certificate = field(init=False)
    ct_key: ec.EllipticCurvePrivateKey = field(init=False)
    rekor_key: ec.EllipticCurvePrivateKey = field(init=False)
    entries: list[LogEntry] = field(default_factory=list)
    _counter: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.ca_key = self._key("ca")
        self.ct_key = self._key("ct")
        self.rekor_key = self._key("rekor")
        self.ca_cert = self._make_ca(self.ca_key, "modelreg test fulcio")
        # a few unrelated entries first, so that inclusion proofs are not trivial
        for i in range(5):
            self.entries.append(LogEntry(i, b'{"filler":%d}' % i, 1_704_067_200 + i))

    # ------------------------------------------------------------------ keys
    def _key(self, label: str) -> ec.EllipticCurvePrivateKey:
        if self.seed is None:
            return ec.generate_private_key(ec.SECP256R1())
        digest = hashlib.sha256(f"modelreg-fake-sigstore/{self.seed}/{label}".encode()).digest()
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        return ec.derive_private_key(
            int.from_bytes(digest, "big") % (order - 1) + 1, ec.SECP256R1()
        )

    def key(self, label: str) -> ec.EllipticCurvePrivateKey:
        """A (deterministic when seeded) P-256 key, e.g. an ephemeral signing key."""
        return self._key(label)

    def _serial(self) -> int:
        self._counter += 1
        if self.seed is None:
            return x509.random_serial_number()
        h = hashlib.sha256(f"serial/{self.seed}/{self._counter}".encode()).digest()
        return int.from_bytes(h[:16], "big") >> 1 | 1

    def _sign_cert(
        self, builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey
    ) -> x509.Certificate:
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=self.seed is not None)

    def _ecdsa(self) -> ec.ECDSA:
        return ec.ECDSA(hashes.SHA256(), deterministic_signing=self.seed is not None)

    def _make_ca(self, key: ec.EllipticCurvePrivateKey, cn: str) -> x509.Certificate:
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "modelreg.test"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(self._serial())
            .not_valid_before(EPOCH_START)
            # no end in sight: leaves are issued "now", and the suite must pass on any date
            .not_valid_after(dt.datetime(9999, 12, 31, tzinfo=UTC))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                key_usage(sign=False, issue=True),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
        )
        return self._sign_cert(builder, key)

    def rogue_ca(self, label: str = "rogue") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A CA nobody trusts (for 'root embedded in the bundle')."""
        key = self._key(label)
        return key, self._make_ca(key, f"{label} ca")

    # ----------------------------------------------------------- certificates
    def issue_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        identity: str,
        issuer: str,
        *,
        not_before: dt.datetime,
        lifetime: dt.timedelta = dt.timedelta(minutes=10),
        code_signing: bool = True,
        digital_signature: bool = True,
        ca: bool = False,
        issuer_key: ec.EllipticCurvePrivateKey | None = None,
        issuer_cert: x509.Certificate | None = None,
        tamper: Tamper | None = None,
    ) -> x509.Certificate:
        """A Fulcio-style leaf with an embedded precertificate SCT."""
        tamper = tamper or Tamper()
        issuer_key = issuer_key or self.ca_key
        issuer_cert = issuer_cert or self.ca_cert
        san: x509.GeneralName = (
            x509.RFC822Name(identity)
            if "@" in identity and "://" not in identity
            else x509.UniformResourceIdentifier(identity)
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(issuer_cert.subject)
            .public_key(public_key)
            .serial_number(self._serial())
            .not_valid_before(not_before)
            .not_valid_after(not_before + lifetime)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=digital_signature,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        if code_signing:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        if ca:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            )
        builder = (
            builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(OIDC_ISSUER_V1, issuer.encode()), critical=False
            )
            .add_extension(
                x509.UnrecognizedExtension(OIDC_ISSUER_V2, der_utf8(issuer)), critical=False
            )
        )
        if tamper.no_sct:
            return self._sign_cert(builder, issuer_key)
        precert = self._sign_cert(builder, issuer_key)
        tbs = precert.tbs_certificate_bytes
        sct_time_ms = int(not_before.timestamp()) * 1000
        log_key = tamper.sct_log_key or self.ct_key
        sct = self._sct(tbs, issuer_key.public_key(), sct_time_ms, log_key)
        sct_list = struct.pack("!H", len(sct)) + sct
        ext_value = der_octet_string(struct.pack("!H", len(sct_list)) + sct_list)
        cert = self._sign_cert(
            builder.add_extension(
                x509.UnrecognizedExtension(SCT_LIST_OID, ext_value), critical=False
            ),
            issuer_key,
        )
        assert cert.tbs_precertificate_bytes == tbs, "precertificate TBS mismatch"
        return cert

    def _sct(
        self,
        tbs: bytes,
        issuer_pub: ec.EllipticCurvePublicKey,
        timestamp_ms: int,
        log_key: ec.EllipticCurvePrivateKey,
    ) -> bytes:
        issuer_key_hash = key_id(issuer_pub)
        signed_entry = issuer_key_hash + struct.pack("!I", len(tbs))[1:] + tbs
        extensions = b""
        digitally_signed = (
            struct.pack("!BBQH", 0, 0, timestamp_ms, 1)
            + signed_entry
            + struct.pack("!H", len(extensions))
            + extensions
        )
        signature = log_key.sign(digitally_signed, self._ecdsa())
        return (
            struct.pack("!B", 0)
            + key_id(log_key.public_key())
            + struct.pack("!Q", timestamp_ms)
            + struct.pack("!H", len(extensions))
            + extensions
            + struct.pack("!BBH", 4, 3, len(signature))
            + signature
        )

    # -------------------------------------------------------------- the log
    @property
    def log_id(self) -> bytes:
        return key_id(self.rekor_key.public_key())

    def dsse_entry_body(
        self, envelope: dict[str, Any], payload: bytes, cert: x509.Certificate
    ) -> bytes:
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        body = {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(rfc8785.dumps(envelope)).hexdigest(),
                },
                "payloadHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(payload).hexdigest(),
                },
                "signatures": [
                    {"signature": s["sig"], "verifier": b64(cert_pem)}
                    for s in envelope["signatures"]
                ],
            },
        }
        return rfc8785.dumps(body)

    def append(self, body: bytes, integrated_time: int) -> LogEntry:
        with self._lock:
            entry = LogEntry(len(self.entries), body, integrated_time)
            self.entries.append(entry)
            return entry

    def checkpoint(self, size: int, root: bytes, tamper: Tamper | None = None) -> str:
        tamper = tamper or Tamper()
        note = f"{self.origin}\n{size}\n{b64(root)}\n"
        sig = self.rekor_key.sign(note.encode(), self._ecdsa())
        if tamper.bad_checkpoint_signature:
            sig = self.rekor_key.sign(b"something else", self._ecdsa())
        name = self.origin.split(" ")[0]
        return f"{note}\n\u2014 {name} {b64(self.log_id[:4] + sig)}\n"

    def proof(self, entry: LogEntry, tamper: Tamper | None = None) -> dict[str, Any]:
        """The inclusion proof (hex, Rekor v1 API form) for ``entry`` in the current tree."""
        tamper = tamper or Tamper()
        with self._lock:
            leaves = [leaf_hash(e.body) for e in self.entries]
        size = len(leaves)
        root = tree_hash(leaves)
        path = inclusion_path(entry.index, leaves)
        if tamper.bad_inclusion_proof and path:
            path[0] = hashlib.sha256(b"wrong").digest()
        checkpoint_root = tamper.checkpoint_root or root
        return {
            "logIndex": entry.index,
            "rootHash": root.hex(),
            "treeSize": size,
            "hashes": [h.hex() for h in path],
            "checkpoint": self.checkpoint(size, checkpoint_root, tamper),
        }

    def signed_entry_timestamp(self, entry: LogEntry, tamper: Tamper | None = None) -> str:
        tamper = tamper or Tamper()
        payload = rfc8785.dumps(
            {
                "body": b64(entry.body),
                "integratedTime": entry.integrated_time,
                "logID": self.log_id.hex(),
                "logIndex": entry.index,
            }
        )
        if tamper.bad_set:
            payload += b" "
        return b64(self.rekor_key.sign(payload, self._ecdsa()))

    def v1_response(self, entry: LogEntry, tamper: Tamper | None = None) -> dict[str, Any]:
        """What Rekor's ``POST /api/v1/log/entries`` answers."""
        uuid = hashlib.sha256(entry.body).hexdigest()
        return {
            uuid: {
                "body": b64(entry.body),
                "integratedTime": entry.integrated_time,
                "logID": self.log_id.hex(),
                "logIndex": entry.index,
                "verification": {
                    "inclusionProof": self.proof(entry, tamper),
                    "signedEntryTimestamp": self.signed_entry_timestamp(entry, tamper),
                },
            }
        }

    def tlog_entry(self, entry: LogEntry, tamper: Tamper | None = None) -> dict[str, Any]:
        """The bundle's ``tlogEntries[0]`` (protobuf JSON form)."""
        tamper = tamper or Tamper()
        proof = self.proof(entry, tamper)
        out: dict[str, Any] = {
            "logIndex": str(entry.index),
            "logId": {"keyId": b64(self.log_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(entry.integrated_time),
            "inclusionProof": {
                "logIndex": str(entry.index),
                "rootHash": b64(bytes.fromhex(proof["rootHash"])),
                "treeSize": str(proof["treeSize"]),
                "hashes": [b64(bytes.fromhex(h)) for h in proof["hashes"]],
                "checkpoint": {"envelope": proof["checkpoint"]},
            },
            "canonicalizedBody": b64(entry.body),
        }
        if not tamper.no_inclusion_promise:
            out["inclusionPromise"] = {
                "signedEntryTimestamp": self.signed_entry_timestamp(entry, tamper)
            }
        return out

    # -------------------------------------------------------------- bundles
    def keyless_bundle(
        self,
        payload: bytes,
        identity: str,
        issuer: str,
        *,
        signed_at: dt.datetime | None = None,
        payload_type: str = INTOTO,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        cert: x509.Certificate | None = None,
        chain: list[x509.Certificate] | None = None,
        extra_signature: bool = False,
        tamper: Tamper | None = None,
        cert_kwargs: dict[str, Any] | None = None,
    ) -> bytes:
        """A complete keyless DSSE bundle, as Fulcio + Rekor would have produced it."""
        tamper = tamper or Tamper()
        signed_at = signed_at or dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(
            seconds=30
        )
        key = signing_key or self._key(f"ephemeral/{identity}/{signed_at.isoformat()}")
        if cert is None:
            cert = self.issue_certificate(
                key.public_key(),
                identity,
                issuer,
                not_before=signed_at,
                tamper=tamper,
                **(cert_kwargs or {}),
            )
        sig = key.sign(pae(payload_type, payload), self._ecdsa())
        signatures = [{"sig": b64(sig)}]
        if extra_signature:
            signatures.append({"sig": b64(key.sign(pae(payload_type, payload), self._ecdsa()))})
        envelope = {"payload": b64(payload), "payloadType": payload_type, "signatures": signatures}
        offset = 60 if tamper.integrated_time_offset is None else tamper.integrated_time_offset
        integrated = int(cert.not_valid_before_utc.timestamp()) + offset
        logged_payload = tamper.entry_payload if tamper.entry_payload is not None else payload
        body = self.dsse_entry_body(envelope, logged_payload, cert)
        entry = self.append(body, integrated)
        material: dict[str, Any]
        media_type = BUNDLE_V03
        if chain is not None:
            media_type = BUNDLE_V02
            material = {
                "x509CertificateChain": {
                    "certificates": [
                        {"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))}
                        for c in [cert, *chain]
                    ]
                }
            }
        else:
            material = {
                "certificate": {"rawBytes": b64(cert.public_bytes(serialization.Encoding.DER))}
            }
        material["tlogEntries"] = [self.tlog_entry(entry, tamper)]
        bundle = {
            "mediaType": media_type,
            "verificationMaterial": material,
            "dsseEnvelope": envelope,
        }
        return json.dumps(bundle, separators=(",", ":")).encode()

    # ------------------------------------------------------------ trust files
    def _tlog(self, key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
        return {
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": b64(spki_der(key.public_key())),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2024-01-01T00:00:00Z"},
            },
            "logId": {"keyId": b64(key_id(key.public_key()))},
        }

    def trusted_root(self, rekor_url: str = "http://127.0.0.1:1") -> dict[str, Any]:
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [self._tlog(self.rekor_key, rekor_url)],
            "certificateAuthorities": [
                {
                    "subject": {
                        "organization": "modelreg.test",
                        "commonName": "modelreg test fulcio",
                    },
                    "uri": "http://127.0.0.1:1",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": b64(self.ca_cert.public_bytes(serialization.Encoding.DER))}
                        ]
                    },
                    "validFor": {"start": "2024-01-01T00:00:00Z"},
                }
            ],
            "ctlogs": [self._tlog(self.ct_key, "http://127.0.0.1:1")],
            "timestampAuthorities": [],
        }

    def write_trusted_root(self, path: Path, rekor_url: str = "http://127.0.0.1:1") -> Path:
        path.write_text(json.dumps(self.trusted_root(rekor_url), indent=2))
        return path

    def client_trust_config(self, fulcio_url: str, rekor_url: str) -> dict[str, Any]:
        def service(url: str) -> dict[str, Any]:
            return {
                "url": url,
                "majorApiVersion": 1,
                "validFor": {"start": "2024-01-01T00:00:00Z"},
                "operator": "modelreg.test",
            }

        return {
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": self.trusted_root(rekor_url),
            "signingConfig": {
                "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
                "caUrls": [service(fulcio_url)],
                "oidcUrls": [service(fulcio_url)],
                "rekorTlogUrls": [service(rekor_url)],
                "tsaUrls": [],
                "rekorTlogConfig": {"selector": "ANY"},
                "tsaConfig": {"selector": "ANY"},
            },
        }

    # ------------------------------------------------------------- OIDC tokens
    @staticmethod
    def identity_token(
        subject: str, issuer: str, *, lifetime: int = 600, email: str | None = None
    ) -> str:
        """An OIDC-shaped JWT (sigstore-python does not check its signature; Fulcio would)."""
        now = int(dt.datetime.now(UTC).timestamp())
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": subject,
            "aud": "sigstore",
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + lifetime,
        }
        if email:
            claims["email"] = email
            claims["email_verified"] = True
        return jwt.encode(claims, "modelreg-test-oidc-secret-key-0123456789", algorithm="HS256")

    # ------------------------------------------------------------ HTTP services
    @contextlib.contextmanager
    def serving(self, directory: Path) -> Iterator[tuple[FakeSigstoreServer, Path, Path]]:
        """:meth:`serve`, with the client's trust config and trusted root written into
        ``directory``: (server, trust_config.json, trusted_root.json)."""
        with self.serve() as server:
            yield (
                server,
                server.write_trust_config(directory / "trust_config.json"),
                server.write_trusted_root(directory / "trusted_root.json"),
            )

    @contextlib.contextmanager
    def serve(self) -> Iterator[FakeSigstoreServer]:
        """Fulcio and Rekor endpoints on 127.0.0.1 (one server, two APIs)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                # OIDC discovery: model_signing builds an Issuer even when given a token
                if self.path == "/.well-known/openid-configuration":
                    base = f"http://127.0.0.1:{self.server.server_address[1]}"
                    self._json(
                        200,
                        {
                            "issuer": base,
                            "authorization_endpoint": f"{base}/auth",
                            "token_endpoint": f"{base}/token",
                        },
                    )
                else:
                    self._json(404, {"code": 404, "message": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                try:
                    if self.path == "/api/v2/signingCert":
                        self._json(
                            200, fake._handle_fulcio(body, self.headers.get("Authorization", ""))
                        )
                    elif self.path == "/api/v1/log/entries":
                        self._json(201, fake._handle_rekor(body))
                    else:
                        self._json(404, {"code": 404, "message": "not found"})
                except ValueError as exc:
                    self._json(400, {"code": 400, "message": str(exc)})

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield FakeSigstoreServer(self, f"http://127.0.0.1:{server.server_address[1]}")
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)

    def _handle_fulcio(self, body: dict[str, Any], authorization: str) -> dict[str, Any]:
        token = authorization.removeprefix("Bearer ").strip()
        claims = jwt.decode(token, options={"verify_signature": False}, audience="sigstore")
        identity = claims.get("email") or claims["sub"]
        csr_pem = base64.b64decode(body["certificateSigningRequest"])
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("CSR signature invalid (no proof of possession)")
        public_key = csr.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        now = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
        cert = self.issue_certificate(public_key, identity, claims["iss"], not_before=now)
        pems = [c.public_bytes(serialization.Encoding.PEM).decode() for c in (cert, self.ca_cert)]
        return {"signedCertificateEmbeddedSct": {"chain": {"certificates": pems}}}

    def _handle_rekor(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("kind") != "dsse":
            raise ValueError(f"unsupported entry kind {body.get('kind')!r}")
        proposed = body["spec"]["proposedContent"]
        envelope = json.loads(proposed["envelope"])
        cert = x509.load_pem_x509_certificate(base64.b64decode(proposed["verifiers"][0]))
        payload = base64.b64decode(envelope["payload"])
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        for s in envelope["signatures"]:
            key.verify(
                base64.b64decode(s["sig"]),
                pae(envelope["payloadType"], payload),
                ec.ECDSA(hashes.SHA256()),
            )
        entry = self.append(
            self.dsse_entry_body(envelope, payload, cert),
            int(dt.datetime.now(UTC).timestamp()),
        )
        return self.v1_response(entry)


@dataclass
class FakeSigstoreServer:
    fake: FakeSigstore
    url: str

    def write_trust_config(self, path: Path) -> Path:
        path.write_text(json.dumps(self.fake.client_trust_config(self.url, self.url), indent=2))
        return path

    def write_trusted_root(self, path: Path) -> Path:
        return self.fake.write_trusted_root(path, self.url)


# ------------------------------------------------------------ network guard


class NetworkBlocked(OSError):
    """A test tried to reach something other than loopback."""


def block_network(monkeypatch: Any) -> list[Any]:
    """Refuse non-loopback ``connect`` and DNS lookups (pytest ``monkeypatch``).

    Returns the list of refused attempts (empty when the code under test stayed
    on loopback, i.e. talked to nothing but the local registry and services).
    """
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def loopback(address: Any) -> bool:
        if isinstance(address, str | bytes):  # AF_UNIX
            return True
        host = address[0]
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return bool(host == "localhost")

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if not loopback(address):
            attempts.append(address)
            raise NetworkBlocked(f"network blocked in this test: {address!r}")
        return real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> Any:
        if not loopback(address):
            attempts.append(address)
            raise NetworkBlocked(f"network blocked in this test: {address!r}")
        return real_connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name != "localhost":
            try:
                allowed = ipaddress.ip_address(name).is_loopback
            except ValueError:
                allowed = False
            if not allowed:
                attempts.append(name)
                raise NetworkBlocked(f"DNS blocked in this test: {name!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return attempts
