"""The CI pipeline step: publish, sign, attest provenance and gate, in one step.

:func:`publish` (the training pipeline's last step)
    pre-flight checks (reference, model directory, signing identity, lineage
    file, policies: nothing is pushed when one fails), then pack + push, sign
    (a key from a file or a secret, or keyless with the CI's OIDC identity),
    attest SLSA provenance v1 built from the CI environment (GitHub Actions,
    GitLab CI, generic), optionally attest training lineage, optionally check
    policies against what was just published.

:func:`verify` (the deploy pipeline's gate)
    every applicable policy checked against the digest the tag resolves to;
    a readable report and the pinned reference to deploy.

Exit codes (also ``modelreg ci --help`` and ``docs/ci.md``)::

    publish: 0 published · 2 usage · 10 push · 11 sign · 12 attest · 13 policy
    verify:  0 allowed · 13 refused · 9 could not evaluate (fail closed) · 2 usage

A stage's code is used whether its failure is found before the push
(pre-flight: e.g. no OIDC token -> 11 and nothing pushed) or after.

Results go where each CI reads them (:class:`CIOutputs`): ``$GITHUB_OUTPUT``,
``$GITHUB_STEP_SUMMARY``, a GitLab dotenv report and a JSON summary.
"""

from __future__ import annotations

from modelreg.ci._env import GENERIC_BUILD_TYPE, CIEnvironment, Provider, detect_ci, provenance
from modelreg.ci._outputs import DEFAULT_DOTENV, CIOutputs, dotenv_lines, github_output_lines
from modelreg.ci._publish import (
    EXIT_ATTEST,
    EXIT_CODES,
    EXIT_POLICY,
    EXIT_PUSH,
    EXIT_SIGN,
    PublishError,
    PublishResult,
    Stage,
    StepRecord,
    load_lineage,
    publish,
)
from modelreg.ci._report import gate_markdown, gate_text, publish_markdown, publish_text
from modelreg.ci._signing import (
    KEY_ENV,
    TOKEN_ENV,
    PreparedSigning,
    SigningOptions,
    prepare_signing,
)
from modelreg.ci._verify import (
    EXIT_ALLOWED,
    EXIT_CANNOT_EVALUATE,
    EXIT_REFUSED,
    GateResult,
    verify,
)

__all__ = [
    "DEFAULT_DOTENV",
    "EXIT_ALLOWED",
    "EXIT_ATTEST",
    "EXIT_CANNOT_EVALUATE",
    "EXIT_CODES",
    "EXIT_POLICY",
    "EXIT_PUSH",
    "EXIT_REFUSED",
    "EXIT_SIGN",
    "GENERIC_BUILD_TYPE",
    "KEY_ENV",
    "TOKEN_ENV",
    "CIEnvironment",
    "CIOutputs",
    "GateResult",
    "PreparedSigning",
    "Provider",
    "PublishError",
    "PublishResult",
    "SigningOptions",
    "Stage",
    "StepRecord",
    "detect_ci",
    "dotenv_lines",
    "gate_markdown",
    "gate_text",
    "github_output_lines",
    "load_lineage",
    "prepare_signing",
    "provenance",
    "publish",
    "publish_markdown",
    "publish_text",
    "verify",
]
