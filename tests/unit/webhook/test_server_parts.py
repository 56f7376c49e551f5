"""Metrics exposition, certificate generation and reloading (no sockets)."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from modelreg.webhook import certs
from modelreg.webhook.metrics import Metrics
from modelreg.webhook.tls import ReloadingTLS


def test_metrics_text_format() -> None:
    m = Metrics()
    m.decisions.inc(endpoint="validate", result="denied", dry_run="false")
    m.latency.observe(0.003, endpoint="validate")
    m.latency.observe(7.0, endpoint="validate")
    m.registry_errors.inc(step="resolve")
    text = m.expose()
    assert "# TYPE modelreg_webhook_decisions_total counter" in text
    assert (
        'modelreg_webhook_decisions_total{dry_run="false",endpoint="validate",result="denied"} 1'
        in text
    )
    assert 'modelreg_webhook_decision_seconds_bucket{endpoint="validate",le="0.005"} 1' in text
    assert 'modelreg_webhook_decision_seconds_bucket{endpoint="validate",le="+Inf"} 2' in text
    assert 'modelreg_webhook_decision_seconds_count{endpoint="validate"} 2' in text
    assert 'modelreg_webhook_registry_errors_total{step="resolve"} 1' in text
    assert text.endswith("\n")


def test_serving_certificate_names_and_usage(tmp_path: Path) -> None:
    made = certs.generate("modelreg-webhook", "modelreg-system", extra_names=("127.0.0.1",))
    paths = certs.write(made, tmp_path)
    assert os.stat(paths["key"]).st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(made.cert_pem)
    ca = x509.load_pem_x509_certificate(made.ca_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "modelreg-webhook.modelreg-system.svc" in san.get_values_for_type(x509.DNSName)
    assert san.get_values_for_type(x509.IPAddress)[0].compressed == "127.0.0.1"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    import base64

    assert base64.b64decode(made.ca_bundle) == made.ca_pem
    # a client trusting the bundle accepts the chain for the service name
    ctx = ssl.create_default_context(cadata=made.ca_pem.decode())
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_reloading_tls(tmp_path: Path) -> None:
    first = certs.generate("svc", "ns")
    certs.write(first, tmp_path)
    tls = ReloadingTLS(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert not tls.changed() and not tls.maybe_reload()
    # a half-written pair (new cert, old key) is rejected; the old one keeps serving
    second = certs.generate("svc", "ns")
    time.sleep(0.01)
    (tmp_path / "tls.crt").write_bytes(second.cert_pem)
    assert tls.changed()
    assert not tls.maybe_reload()
    assert tls.failures == 1
    assert not tls.maybe_reload() and tls.failures == 1  # the same bad pair is not retried
    (tmp_path / "tls.key").write_bytes(second.key_pem)
    assert tls.maybe_reload()
    assert tls.reloads == 1 and not tls.changed()
