"""The remote backend: OCI registries over HTTP (distribution-spec v1.1).

::

    with RegistryClient("registry.example.com", credentials=CredentialStore()) as client:
        repo = client.repository("team/llm")
        desc = repo.resolve("v1")
        with repo.fetch(desc) as reader:      # verified against desc as it is read
            ...

Modules: :mod:`.client` (scheme, TLS, retries, counters), :mod:`.target` (the
:class:`~modelreg.content.base.Target` of one repository), :mod:`.uploads`
(monolithic/chunked, resumable blob uploads), :mod:`.auth` (challenges and
tokens), :mod:`.credentials` (docker config and credential helpers),
:mod:`.retry` (backoff policy), :mod:`.errors` (status and transport errors to
the modelreg error tree).
"""

from modelreg.content.registry.auth import Challenge, parse_www_authenticate
from modelreg.content.registry.client import (
    BULK_MIN,
    ClientStats,
    RegistryClient,
    StatsSnapshot,
    is_loopback,
)
from modelreg.content.registry.credentials import (
    Credential,
    CredentialProvider,
    CredentialStore,
    StaticCredentials,
    default_config_path,
    login,
    logout,
)
from modelreg.content.registry.retry import RetryPolicy
from modelreg.content.registry.target import RegistryTarget, referrers_tag
from modelreg.content.registry.uploads import MONOLITHIC_MAX

__all__ = [
    "BULK_MIN",
    "MONOLITHIC_MAX",
    "Challenge",
    "ClientStats",
    "Credential",
    "CredentialProvider",
    "CredentialStore",
    "RegistryClient",
    "RegistryTarget",
    "RetryPolicy",
    "StaticCredentials",
    "StatsSnapshot",
    "default_config_path",
    "is_loopback",
    "login",
    "logout",
    "parse_www_authenticate",
    "referrers_tag",
]
