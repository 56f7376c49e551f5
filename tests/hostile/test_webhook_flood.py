"""A flood of reviews against a hung registry (SECURITY.md cases 23 and 27, issue 20).

Hundreds of keep-alive HTTPS connections, one review in flight on each, the way the
kube-apiserver sends them during a large rollout, every review naming a model on a
registry that accepts connections and never answers. What must hold:

* every review gets an answer (as many answers as requests), each a well-formed
  AdmissionReview denial (fail closed) naming its cause: overloaded (shed at once by the
  admission queue), registry slow (the budget ran out) or circuit open;
* nothing hangs: the outer bound is a generous hang guard, not a speed assertion;
* once enough decisions have failed to connect, the registry's circuit opens and the
  next review is denied without waiting.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg import Client, RemoteOptions
from modelreg.policy import load_policies
from modelreg.webhook import certs
from modelreg.webhook.breaker import BreakerConfig
from modelreg.webhook.engine import Engine, EngineConfig
from modelreg.webhook.server import BackgroundServer, ServerConfig
from tests.listeners import silent_listener
from tests.unit.webhook.reviews import pod_spec, review, workload

CONNECTIONS = 300
ROUNDS = 2
BUDGET = 1.0
HANG_GUARD = BUDGET + 10.0
"""Seconds after which an answer counts as hung (the real bound is the budget)."""
CAUSES = ("overloaded", "registry slow: no decision within the 1s budget", "circuit open")


@pytest.fixture
def hung_registry() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with silent_listener(backlog=1024) as port:
        yield port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> tuple[int, bytes]:
    writer.write(
        b"POST /validate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return status, await reader.readexactly(length)


async def _flood(port: int, ca: str, image: str) -> list[tuple[str, float, int, dict[str, Any]]]:
    ctx = ssl.create_default_context(cafile=ca)
    answers: list[tuple[str, float, int, dict[str, Any]]] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
        )
        try:
            for _ in range(ROUNDS):
                doc = review(workload("Pod", pod_spec([image])))
                start = time.monotonic()
                status, body = await _exchange(reader, writer, json.dumps(doc).encode())
                answers.append(
                    (doc["request"]["uid"], time.monotonic() - start, status, json.loads(body))
                )
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.wait_for(asyncio.gather(*(connection() for _ in range(CONNECTIONS))), timeout=120)
    return answers


def test_flood_against_a_hung_registry(tmp_path: Path, hung_registry: int) -> None:
    host = f"127.0.0.1:{hung_registry}"
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "hung.yaml").write_text(
        "apiVersion: modelreg.dev/v1alpha1\nkind: ModelPolicy\nmetadata: {name: hung}\n"
        f"spec:\n  match: {{references: ['{host}/**']}}\n"
        "  require: {artifact: {noPickle: true}}\n"
    )
    tls = certs.write(
        certs.generate("modelreg-webhook", "test", extra_names=("127.0.0.1",)), tmp_path / "tls"
    )
    # as `webhook serve` configures it: no request outlives the budget, retries included
    client = Client(
        RemoteOptions(
            store=str(tmp_path / "store"), fsync=False, timeout=BUDGET, document_deadline=BUDGET
        )
    )
    engine = Engine(
        load_policies([policy_dir]),
        client,
        EngineConfig(budget=BUDGET, breaker=BreakerConfig(failures=5, reset_after=60)),
    )
    config = ServerConfig(
        host="127.0.0.1",
        port=free_port(),
        cert_file=tls["cert"],
        key_file=tls["key"],
        log_level="warning",
        max_pending=16,
    )
    image = f"{host}/models/llm:v1"
    with BackgroundServer(engine, config) as server:
        answers = asyncio.run(_flood(config.port, tls["ca"], image))
        assert len(answers) == CONNECTIONS * ROUNDS
        assert len({uid for uid, *_ in answers}) == len(answers)
        causes = dict.fromkeys(CAUSES, 0)
        for uid, elapsed, status, doc in answers:
            assert status == 200
            assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
            response = doc["response"]
            assert response["uid"] == uid
            assert response["allowed"] is False
            message = response["status"]["message"]
            assert "fail closed" in message and image in message
            (cause,) = [c for c in CAUSES if c in message]
            causes[cause] += 1
            assert elapsed < HANG_GUARD, (elapsed, message)
        assert causes["overloaded"] > 0  # the queue shed what it could not hold
        assert sum(causes.values()) == len(answers)
        hook = server.hook
        assert hook is not None
        metrics = engine.metrics
        assert metrics.shed.value(reason="overloaded") == causes["overloaded"]
        # the decision threads report their connection failures as they time out: the
        # circuit opens, and from then on a review is denied without a thread
        guard = time.monotonic() + 60
        while metrics.breaker_state.value(registry=host) != 1:
            assert time.monotonic() < guard, "the circuit never opened"
            time.sleep(0.1)
        (last,) = asyncio.run(_one(config.port, tls["ca"], image))
        assert "circuit open" in last["response"]["status"]["message"]
        assert hook.pending == 0
    text = metrics.expose()
    assert f'modelreg_webhook_breaker_state{{registry="{host}"}} 1' in text


async def _one(port: int, ca: str, image: str) -> list[dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=ca)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
    )
    try:
        doc = review(workload("Pod", pod_spec([image])))
        status, body = await _exchange(reader, writer, json.dumps(doc).encode())
        assert status == 200
        return [json.loads(body)]
    finally:
        writer.close()
        await writer.wait_closed()
