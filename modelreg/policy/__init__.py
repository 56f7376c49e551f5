"""Model policies: who may sign, which attestations, which artifacts may run.

A policy is a YAML document (``apiVersion: modelreg.dev/v1alpha1``, ``kind:
ModelPolicy``) loaded with :func:`load_policies` (errors name the file, line and
reason). Evaluation is split in two:

* :func:`gather_facts` does the I/O: resolve the tag once, read the manifest and
  config, verify signatures and attestations under each policy's authorities;
* :func:`evaluate` is pure: ``evaluate(policies, facts) -> Decision``, every rule
  with a result (passed, failed, error) and the reason.

Combination: every applicable ``enforce`` policy must pass (AND across policies;
AND across the rules of a policy); ``warn`` policies only add warnings. A rule that
could not be evaluated is an ``error`` and never counts as passed. See
``policies/README.md``.
"""

from modelreg.policy._conditions import (
    AllOfConditions,
    AnyOfConditions,
    Condition,
    FieldCondition,
    RegoCondition,
)
from modelreg.policy._evaluate import applicable, evaluate
from modelreg.policy._facts import (
    ANN_FILE_UNSAFE,
    PICKLE_EXTENSIONS,
    ArtifactFacts,
    Facts,
    FileFact,
    StepError,
    VerificationOutcome,
    VerificationResultLike,
)
from modelreg.policy._gather import (
    Verifier,
    artifact_facts,
    default_verifier,
    gather_facts,
    verification_policy,
)
from modelreg.policy._glob import Glob
from modelreg.policy._parse import PolicySet, load_policies, load_policy_file, parse_policies
from modelreg.policy._policy import (
    API_VERSION,
    KIND,
    AllOf,
    AnyOf,
    AttestationRule,
    EvalContext,
    FormatRule,
    KeyAuthoritySpec,
    KeylessAuthoritySpec,
    LicenseRule,
    Match,
    MaxSizeRule,
    NoPickleRule,
    Policy,
    RequiredFieldsRule,
    Rule,
    SignatureRule,
)
from modelreg.policy._rego import RegoError, RegoModule
from modelreg.policy._results import (
    NO_MATCH_SETTINGS,
    Decision,
    Mode,
    NoMatch,
    PolicyResult,
    RuleResult,
    Status,
    no_match_setting,
)
from modelreg.policy._yaml import PolicyLoadError

__all__ = [
    "ANN_FILE_UNSAFE",
    "API_VERSION",
    "KIND",
    "NO_MATCH_SETTINGS",
    "PICKLE_EXTENSIONS",
    "AllOf",
    "AllOfConditions",
    "AnyOf",
    "AnyOfConditions",
    "ArtifactFacts",
    "AttestationRule",
    "Condition",
    "Decision",
    "EvalContext",
    "Facts",
    "FieldCondition",
    "FileFact",
    "FormatRule",
    "Glob",
    "KeyAuthoritySpec",
    "KeylessAuthoritySpec",
    "LicenseRule",
    "Match",
    "MaxSizeRule",
    "Mode",
    "NoMatch",
    "NoPickleRule",
    "Policy",
    "PolicyLoadError",
    "PolicyResult",
    "PolicySet",
    "RegoCondition",
    "RegoError",
    "RegoModule",
    "RequiredFieldsRule",
    "Rule",
    "RuleResult",
    "SignatureRule",
    "Status",
    "StepError",
    "VerificationOutcome",
    "VerificationResultLike",
    "Verifier",
    "applicable",
    "artifact_facts",
    "default_verifier",
    "evaluate",
    "gather_facts",
    "load_policies",
    "load_policy_file",
    "no_match_setting",
    "parse_policies",
    "verification_policy",
]
