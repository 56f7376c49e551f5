"""Which CI runs us, read from its (non-secret) environment variables.

GitHub Actions and GitLab CI are recognised by ``GITHUB_ACTIONS=true`` and
``GITLAB_CI=true``. Anything else is the *generic* provider: the ``MODELREG_CI_*``
variables (``REPOSITORY``, ``COMMIT``, ``REF``, ``WORKFLOW``, ``RUN_ID``,
``RUN_URL``, ``RUNNER``) win, then the usual variables of Jenkins, CircleCI and
Buildkite. Tokens and passwords are never read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from modelreg.settings import ci_environ
from modelreg.sign import slsa_provenance

__all__ = ["GENERIC_BUILD_TYPE", "CIEnvironment", "Provider", "detect_ci", "provenance"]

Provider = Literal["github", "gitlab", "generic"]

GENERIC_BUILD_TYPE: Final = "https://modelreg.dev/buildtypes/ci/v1"

# (repository, commit, ref, workflow, run id, run url, runner), first set variable wins
_GENERIC: Final[dict[str, tuple[str, ...]]] = {
    "repository": (
        "MODELREG_CI_REPOSITORY",
        "GIT_URL",
        "CIRCLE_REPOSITORY_URL",
        "BUILDKITE_REPO",
    ),
    "commit": ("MODELREG_CI_COMMIT", "GIT_COMMIT", "CIRCLE_SHA1", "BUILDKITE_COMMIT"),
    "ref": ("MODELREG_CI_REF", "GIT_BRANCH", "CIRCLE_BRANCH", "BUILDKITE_BRANCH"),
    "workflow": (
        "MODELREG_CI_WORKFLOW",
        "JOB_NAME",
        "CIRCLE_JOB",
        "BUILDKITE_PIPELINE_SLUG",
    ),
    "run_id": ("MODELREG_CI_RUN_ID", "BUILD_ID", "CIRCLE_WORKFLOW_ID", "BUILDKITE_BUILD_ID"),
    "run_url": ("MODELREG_CI_RUN_URL", "BUILD_URL", "CIRCLE_BUILD_URL", "BUILDKITE_BUILD_URL"),
    "runner": ("MODELREG_CI_RUNNER", "NODE_NAME", "CIRCLE_NODE_INDEX", "BUILDKITE_AGENT_NAME"),
}


@dataclass(frozen=True)
class CIEnvironment:
    """Where a publish runs: enough to say "built by this workflow, from this commit"."""

    provider: Provider
    repository: str = ""
    """The source repository as a URL (``https://github.com/acme/models``) when known."""
    commit: str = ""
    ref: str = ""
    workflow: str = ""
    """GitHub: the workflow file path; GitLab: the job name; generic: the job/pipeline."""
    run_id: str = ""
    run_url: str = ""
    runner: str = ""

    @property
    def name(self) -> str:
        return {"github": "GitHub Actions", "gitlab": "GitLab CI", "generic": "generic"}[
            self.provider
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "repository": self.repository,
            "commit": self.commit,
            "ref": self.ref,
            "workflow": self.workflow,
            "runId": self.run_id,
            "runUrl": self.run_url,
            "runner": self.runner,
        }


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return ""


def detect_ci(environ: Mapping[str, str] | None = None) -> CIEnvironment:
    """The CI provider and its run, from ``environ`` (default: the process's)."""
    env = ci_environ(environ)
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        repo = env["GITHUB_REPOSITORY"]
        workflow = env.get("GITHUB_WORKFLOW_REF", "").split("@", 1)[0]
        if workflow.startswith(repo + "/"):
            workflow = workflow[len(repo) + 1 :]
        run_id = env.get("GITHUB_RUN_ID", "")
        return CIEnvironment(
            provider="github",
            repository=f"{server}/{repo}",
            commit=env.get("GITHUB_SHA", ""),
            ref=env.get("GITHUB_REF", ""),
            workflow=workflow or env.get("GITHUB_WORKFLOW", ""),
            run_id=run_id,
            run_url=f"{server}/{repo}/actions/runs/{run_id}" if run_id else "",
            runner=env.get("RUNNER_NAME", "") or env.get("RUNNER_ENVIRONMENT", ""),
        )
    if env.get("GITLAB_CI") == "true" and env.get("CI_PROJECT_PATH"):
        server = env.get("CI_SERVER_URL", "https://gitlab.com").rstrip("/")
        project = env["CI_PROJECT_PATH"]
        return CIEnvironment(
            provider="gitlab",
            repository=env.get("CI_PROJECT_URL", f"{server}/{project}"),
            commit=env.get("CI_COMMIT_SHA", ""),
            ref=env.get("CI_COMMIT_REF_NAME", ""),
            workflow=env.get("CI_JOB_NAME", ""),
            run_id=env.get("CI_PIPELINE_ID", "") or env.get("CI_JOB_ID", ""),
            run_url=env.get("CI_JOB_URL", "") or env.get("CI_PIPELINE_URL", ""),
            runner=env.get("CI_RUNNER_DESCRIPTION", "") or env.get("CI_RUNNER_ID", ""),
        )
    values = {key: _first(env, names) for key, names in _GENERIC.items()}
    return CIEnvironment(provider="generic", **values)


def provenance(
    ci: CIEnvironment,
    *,
    subject: str,
    started_on: str,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """SLSA provenance v1 for a publish: the signing package's GitHub / GitLab builders,
    and for the generic provider its local builder completed with what the CI told us."""
    env = ci_environ(environ)
    predicate = slsa_provenance(environ=env, started_on=started_on, source=subject)
    if ci.provider != "generic" or not any(
        (ci.repository, ci.commit, ci.workflow, ci.run_id, ci.runner)
    ):
        return predicate
    build = predicate["buildDefinition"]
    build["buildType"] = GENERIC_BUILD_TYPE
    external = build.setdefault("externalParameters", {})
    for key, value in (
        ("repository", ci.repository),
        ("ref", ci.ref),
        ("workflow", ci.workflow),
    ):
        if value:
            external[key] = value
    if ci.repository:
        dep: dict[str, Any] = {"uri": f"git+{ci.repository}" + (f"@{ci.ref}" if ci.ref else "")}
        if ci.commit:
            dep["digest"] = {"gitCommit": ci.commit}
        build["resolvedDependencies"].insert(0, dep)
    run = predicate["runDetails"]
    if ci.runner:
        run["builder"]["id"] = f"https://modelreg.dev/builders/ci/{ci.runner}"
    if ci.run_url or ci.run_id:
        run["metadata"]["invocationId"] = ci.run_url or ci.run_id
    return predicate
