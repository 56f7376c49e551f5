"""``publish``: pack + push, sign, attest provenance (and lineage), gate on policies.

Each step belongs to a *stage*, and a failure's exit code is its stage's
(:data:`EXIT_CODES`), whether it is found by the pre-flight checks (before
anything is pushed) or while the step runs. The result is recorded step by step,
so that a failure still reports what was already done.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from modelreg._json import camel_fields
from modelreg.ci._env import CIEnvironment, detect_ci, provenance
from modelreg.ci._outputs import CIOutputs
from modelreg.ci._signing import PreparedSigning, SigningOptions, prepare_signing
from modelreg.client import Client, RemoteOptions
from modelreg.errors import InvalidInputError, ModelRegError
from modelreg.oci.reference import Reference
from modelreg.policy import Decision, PolicySet, evaluate, gather_facts, load_policies
from modelreg.settings import ci_environ
from modelreg.sign import (
    SLSA_PROVENANCE_V1,
    TRAINING_LINEAGE_PREDICATE,
    BundleSigner,
    attest,
    sign,
    validate_training_lineage,
)

__all__ = [
    "EXIT_ATTEST",
    "EXIT_CODES",
    "EXIT_POLICY",
    "EXIT_PUSH",
    "EXIT_SIGN",
    "PublishError",
    "PublishResult",
    "Stage",
    "StepRecord",
    "publish",
]

Stage = Literal["push", "sign", "attest", "policy"]

EXIT_PUSH: Final = 10
EXIT_SIGN: Final = 11
EXIT_ATTEST: Final = 12
EXIT_POLICY: Final = 13
EXIT_CODES: Final[dict[str, int]] = {
    "push": EXIT_PUSH,
    "sign": EXIT_SIGN,
    "attest": EXIT_ATTEST,
    "policy": EXIT_POLICY,
}
MAX_LINEAGE_BYTES: Final = 16 * 1024 * 1024


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class StepRecord:
    name: str
    stage: Stage
    status: Literal["ok", "failed", "skipped"]
    detail: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **camel_fields(self, "name", "stage", "status", "detail"),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class PublishResult:
    """What a publish did. ``ok`` is False when a stage failed (see ``failed_stage``)."""

    reference: str
    ci: CIEnvironment
    digest: str | None = None
    pinned: str | None = None
    signing: str = ""
    signer: str | None = None
    signatures: list[dict[str, Any]] = field(default_factory=list)
    attestations: list[dict[str, Any]] = field(default_factory=list)
    policy: Decision | None = None
    steps: list[StepRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed_stage: Stage | None = None
    error: str | None = None
    hint: str | None = None
    bytes_sent: int = 0

    @property
    def ok(self) -> bool:
        return self.failed_stage is None

    @property
    def exit_code(self) -> int:
        return 0 if self.failed_stage is None else EXIT_CODES[self.failed_stage]

    @property
    def policy_status(self) -> str:
        return "skipped" if self.policy is None else self.policy.status

    def outputs(self) -> dict[str, str]:
        """The step outputs (GitHub ``$GITHUB_OUTPUT`` names; dotenv: MODELREG_<NAME>)."""
        return {
            "digest": self.digest or "",
            "reference": self.pinned or "",
            "tag-reference": self.reference,
            "signer": self.signer or "",
            "signing": self.signing,
            "provenance-referrer": next(
                (
                    a["referrer"]
                    for a in self.attestations
                    if a["predicateType"] == SLSA_PROVENANCE_V1
                ),
                "",
            ),
            "policy": self.policy_status,
            "status": "published" if self.ok else f"failed:{self.failed_stage}",
            "exit-code": str(self.exit_code),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exitCode": self.exit_code,
            "failedStage": self.failed_stage,
            "error": None if self.error is None else {"message": self.error, "hint": self.hint},
            "reference": self.pinned,
            "tagReference": self.reference,
            "digest": self.digest,
            "ci": self.ci.to_dict(),
            "signing": self.signing,
            "signer": self.signer,
            "signatures": self.signatures,
            "attestations": self.attestations,
            "policy": None if self.policy is None else self.policy.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "warnings": self.warnings,
            "bytesSent": self.bytes_sent,
        }

    def markdown(self) -> str:
        """The GitHub step summary."""
        from modelreg.ci._report import publish_markdown

        return publish_markdown(self)


class PublishError(ModelRegError):
    """A publish stage failed; ``result`` holds what was done, ``exit_code`` the stage's."""

    def __init__(
        self, stage: Stage, message: str, result: PublishResult, *, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.stage = stage
        self.result = result
        self.exit_code = EXIT_CODES[stage]


def load_lineage(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a training-lineage predicate file (JSON)."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_LINEAGE_BYTES:
            raise InvalidInputError(f"the lineage file {str(p)!r} is too large")
        body = json.loads(p.read_bytes())
    except OSError as exc:
        raise InvalidInputError(f"cannot read the lineage file {str(p)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"the lineage file {str(p)!r} is not JSON: {exc}") from exc
    return validate_training_lineage(body)


@dataclass
class _Run:
    result: PublishResult
    on_step: Callable[[StepRecord], None] | None

    @contextmanager
    def step(self, name: str, stage: Stage) -> Iterator[StepRecord]:
        record = StepRecord(name, stage, "ok")
        start = time.monotonic()
        try:
            yield record
        except ModelRegError as exc:
            record.status = "failed"
            record.detail = exc.message
            self._fail(stage, exc.message, exc.hint, exc)
        except Exception as exc:
            record.status = "failed"
            record.detail = f"{type(exc).__name__}: {exc}"
            self._fail(stage, f"unexpected {type(exc).__name__}: {exc}", None, exc)
        finally:
            record.seconds = time.monotonic() - start
            self.result.steps.append(record)
            if self.on_step is not None:
                self.on_step(record)

    def _fail(self, stage: Stage, message: str, hint: str | None, exc: BaseException) -> None:
        self.result.failed_stage = stage
        self.result.error = message
        self.result.hint = hint
        raise PublishError(stage, message, self.result, hint=hint) from exc


def publish(
    directory: str | os.PathLike[str],
    reference: str,
    *,
    signing: SigningOptions | None = None,
    lineage: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    policies: Sequence[str | os.PathLike[str]] = (),
    options: RemoteOptions | None = None,
    client: Client | None = None,
    outputs: CIOutputs | None = None,
    environ: Mapping[str, str] | None = None,
    push_kwargs: Mapping[str, Any] | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> PublishResult:
    """Publish a model directory from a CI job: push, sign, attest, check policies.

    Raises :class:`PublishError` (``exit_code`` 10 push, 11 sign, 12 attest, 13
    policy) with the partial result; ``outputs`` are written in both cases.
    """
    env = ci_environ(environ)
    ci = detect_ci(env)
    result = PublishResult(reference=reference, ci=ci)
    run = _Run(result, on_step)
    started = _now()
    try:
        # ------------------------------------------------------------ pre-flight
        with run.step("check the model and reference", "push"):
            ref = Reference.parse(reference)
            if ref.digest is not None:
                raise InvalidInputError(
                    f"cannot publish to a digest reference {reference!r}",
                    hint="publish to a tag; the digest is computed from the content",
                )
            if not Path(directory).is_dir():
                raise InvalidInputError(f"the model directory {str(directory)!r} does not exist")
        prepared: PreparedSigning
        with run.step("check the signing identity", "sign") as rec:
            prepared = prepare_signing(signing or SigningOptions(), env)
            result.signing = prepared.mode
            rec.detail = prepared.describe()
        lineage_body: dict[str, Any] | None = None
        if lineage is not None:
            with run.step("check the training lineage", "attest"):
                if isinstance(lineage, Mapping):
                    lineage_body = validate_training_lineage(dict(lineage))
                else:
                    lineage_body = load_lineage(lineage)
        policy_set: PolicySet | None = None
        if policies:
            with run.step("load the policies", "policy") as rec:
                policy_set = load_policies([Path(p) for p in policies])
                rec.detail = ", ".join(p.name for p in policy_set)

        own_client = client is None
        active = client if client is not None else Client(options or RemoteOptions())
        try:
            _publish_steps(
                run,
                active,
                directory,
                ref,
                prepared,
                lineage_body,
                policy_set,
                started,
                env,
                push_kwargs,
            )
        finally:
            if own_client:
                active.close()
        return result
    finally:
        if outputs is not None:
            outputs.write(result.outputs(), result.to_dict(), result.markdown())
            result.warnings.extend(outputs.warnings)


@contextmanager
def _signer_step(run: _Run, prepared: PreparedSigning) -> Iterator[BundleSigner]:
    """Enter the signer (keyless: token + certificate) as a step of the sign stage."""
    with ExitStack() as stack:
        with run.step(
            "obtain the signing certificate"
            if prepared.mode == "keyless"
            else "load the signing key",
            "sign",
        ) as rec:
            signer = stack.enter_context(prepared.signer())
            rec.detail = str(signer.identity or "")
        yield signer


def _publish_steps(
    run: _Run,
    client: Client,
    directory: str | os.PathLike[str],
    ref: Reference,
    prepared: PreparedSigning,
    lineage: dict[str, Any] | None,
    policy_set: PolicySet | None,
    started: str,
    env: Mapping[str, str],
    push_kwargs: Mapping[str, Any] | None,
) -> None:
    result = run.result
    with run.step("push", "push") as rec:
        pushed = client.push(Path(directory), ref, **dict(push_kwargs or {}))
        result.digest = pushed.digest
        result.warnings.extend(pushed.warnings)
        result.bytes_sent = pushed.transfer.bytes_sent
        resolved, target, desc = client.resolve(pushed.reference)
        result.reference = str(ref.with_tag(ref.tag or "latest"))
        result.pinned = str(resolved.with_tag(None))
        rec.detail = result.pinned
    name = ref.name
    with _signer_step(run, prepared) as signer:
        with run.step("sign", "sign") as rec:
            signed = sign(target, desc, signer, name=name)
            result.signer = signed.signer
            result.signatures = [b.to_dict() for b in signed.bundles]
            result.warnings.extend(signed.notes)
            rec.detail = f"by {signed.signer}"
        with run.step("attest SLSA provenance", "attest") as rec:
            predicate = provenance(
                result.ci, subject=result.pinned or "", started_on=started, environ=env
            )
            attested = attest(target, desc, signer, SLSA_PROVENANCE_V1, predicate, name=name)
            result.attestations.extend(b.to_dict() for b in attested.bundles)
            rec.detail = f"{result.ci.name} provenance"
        if lineage is not None:
            with run.step("attest training lineage", "attest"):
                attested = attest(
                    target, desc, signer, TRAINING_LINEAGE_PREDICATE, lineage, name=name
                )
                result.attestations.extend(b.to_dict() for b in attested.bundles)
    if policy_set is not None:
        with run.step("check the policies", "policy") as rec:
            facts = gather_facts(client, result.pinned or str(ref), policy_set, resolved=desc)
            decision = evaluate(policy_set, facts)
            result.policy = decision
            result.warnings.extend(decision.warnings)
            rec.detail = decision.status
            if decision.status != "pass":
                from modelreg.errors import PolicyError

                problems = decision.problems or [str(e) for e in facts.errors]
                if not decision.matched:
                    problems = [f"no policy applies to {facts.name}"]
                raise PolicyError(
                    f"{result.pinned} was published but the policy gate refused it: "
                    + "; ".join(problems[:3]),
                    hint="see the policy report; the deploy-side gate will refuse it too",
                )
