"""``modelreg webhook``: serve the admission webhook; make its serving certificate."""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from modelreg_cli.context import REGISTRY_FLAGS, Command, Remote, registry_flags
from modelreg_cli.options import DockerConfigOpt, JsonOpt, PolicyOpt
from modelreg_cli.render import out_console, print_json
from modelreg_cli.wiring import command_group, registrar

from modelreg.errors import InvalidInputError

if TYPE_CHECKING:  # the client is imported by the command that serves
    from modelreg.client import RemoteOptions

webhook_app = command_group(
    "webhook",
    "Kubernetes admission webhook: only verified models run.",
)
UNMATCHED_SETTINGS = ("deny", "warn", "allow")


@webhook_app.command("serve")
@registry_flags()
def serve(
    policy: PolicyOpt,
    tls_cert: Annotated[
        Path, typer.Option("--tls-cert", help="Serving certificate (PEM); reloaded on change.")
    ] = Path("/etc/modelreg/tls/tls.crt"),
    tls_key: Annotated[
        Path, typer.Option("--tls-key", help="Serving key (PEM); reloaded on change.")
    ] = Path("/etc/modelreg/tls/tls.key"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",  # noqa: S104
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTPS port.")] = 8443,
    budget: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=29.0,
            help="Seconds from a review's arrival to its answer; keep it at least 2 s below "
            "the webhook configurations' timeoutSeconds. No decision in time = denial.",
        ),
    ] = 8.0,
    cache_ttl: Annotated[float, typer.Option(help="Seconds an allow decision is cached.")] = 300.0,
    negative_ttl: Annotated[float, typer.Option(help="Seconds a deny decision is cached.")] = 15.0,
    tag_ttl: Annotated[
        float, typer.Option(help="Seconds a tag->digest resolution is reused.")
    ] = 30.0,
    unmatched_models: Annotated[
        str,
        typer.Option(
            help="What to do with a model named by the modelreg.dev/model annotation that no "
            "policy covers: deny, warn or allow."
        ),
    ] = "deny",
    unmatched_images: Annotated[
        str,
        typer.Option(
            help="What to do with a container image or image volume that no policy "
            "matches (by its canonical name): allow (not checked), warn or deny."
        ),
    ] = "allow",
    require_pinned: Annotated[
        bool,
        typer.Option("--require-pinned", help="Deny governed references without a digest."),
    ] = False,
    max_body: Annotated[
        int, typer.Option(help="Largest AdmissionReview body accepted (bytes).")
    ] = (3 * 1024 * 1024),
    cert_reload_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between checks of the certificate and policy files "
            "(both reload on change)."
        ),
    ] = 10.0,
    docker_config: DockerConfigOpt = None,
    remote: Remote = REGISTRY_FLAGS,
    max_pending: Annotated[
        int,
        typer.Option(
            min=1,
            help="Admission queue: reviews that may wait on registries at once; more are "
            "denied at once as overloaded (cached reviews never wait).",
        ),
    ] = 64,
    breaker_failures: Annotated[
        int,
        typer.Option(
            min=0,
            help="Connection failures in a row that open a registry's circuit: decisions "
            "needing it are then denied without contacting it (0: never).",
        ),
    ] = 5,
    breaker_reset: Annotated[
        float,
        typer.Option(
            min=0.1, help="Seconds an open circuit denies before one probe decision is let through."
        ),
    ] = 10.0,
    drain_seconds: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="On SIGTERM: seconds unready but still answering before the listener closes.",
        ),
    ] = 5.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve POST /validate and /mutate over HTTPS, plus /healthz, /readyz, /metrics."""
    import logging

    from modelreg._extras import require

    with Command(remote=remote) as cmd:
        # inside the command: a missing extra is an error like any other (exit 15)
        require("httptools", "webhook", "the admission webhook server (webhook serve)")
        from modelreg.client import Client
        from modelreg.policy import load_policies
        from modelreg.webhook.breaker import BreakerConfig
        from modelreg.webhook.engine import Engine, EngineConfig
        from modelreg.webhook.server import ServerConfig
        from modelreg.webhook.server import serve as run_server

        _check_serve_inputs(unmatched_models, unmatched_images, tls_cert, tls_key)
        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        policies = load_policies(policy)
        engine = Engine(
            policies,
            Client(_webhook_options(cmd.options, docker_config, budget)),
            EngineConfig(
                budget=budget,
                cache_ttl=cache_ttl,
                negative_ttl=negative_ttl,
                tag_ttl=tag_ttl,
                unmatched_models=unmatched_models,  # type: ignore[arg-type]
                unmatched_images=unmatched_images,  # type: ignore[arg-type]
                require_pinned=require_pinned,
                breaker=BreakerConfig(
                    failures=breaker_failures,
                    reset_after=breaker_reset,
                    probe_timeout=max(budget, breaker_reset),
                ),
            ),
        )
        logging.getLogger("modelreg.webhook").info(
            "serving %d policies (digest %s) on https://%s:%d",
            len(policies),
            policies.digest,
            host,
            port,
        )
        run_server(
            engine,
            ServerConfig(
                host=host,
                port=port,
                cert_file=str(tls_cert),
                key_file=str(tls_key),
                max_body=max_body,
                reload_interval=cert_reload_interval,
                log_level=log_level.lower(),
                policy_paths=tuple(str(p) for p in policy),
                max_pending=max_pending,
                drain_seconds=drain_seconds,
            ),
        )


def _check_serve_inputs(
    unmatched_models: str, unmatched_images: str, tls_cert: Path, tls_key: Path
) -> None:
    """Refuse bad settings and missing certificate files before anything starts."""
    if unmatched_models not in UNMATCHED_SETTINGS:
        raise InvalidInputError("--unmatched-models must be deny, warn or allow")
    if unmatched_images not in UNMATCHED_SETTINGS:
        raise InvalidInputError(
            f"--unmatched-images must be deny, warn or allow, not {unmatched_images!r}"
        )
    for f in (tls_cert, tls_key):
        if not f.is_file():
            raise InvalidInputError(
                f"{str(f)!r} is not a file",
                hint="create them with `modelreg webhook certs` or cert-manager",
            )


def _webhook_options(
    base: "RemoteOptions", docker_config: Path | None, budget: float
) -> "RemoteOptions":
    """The server's RemoteOptions: the registry flags of ``base``, warnings to the log,
    no fsync (it writes nothing that must survive), and the decision budget as timeout
    and as the total time of any document, retries included."""
    import logging

    from modelreg.client import RemoteOptions

    return RemoteOptions(
        hosts_dirs=base.hosts_dirs,
        plain_http=base.plain_http,
        insecure=base.insecure,
        ca_file=base.ca_file,
        docker_config=str(docker_config) if docker_config else None,
        on_warning=logging.getLogger("modelreg.webhook").warning,
        fsync=False,
        # a stuck registry must not hold a worker long after the budget denied, and its
        # failure must be known (to the circuit breaker) by then, retries included
        timeout=budget,
        document_deadline=budget,
    )


@webhook_app.command("certs")
def certs(
    service: Annotated[str, typer.Option(help="Service name.")] = "modelreg-webhook",
    namespace: Annotated[str, typer.Option(help="Namespace of the service.")] = "modelreg-system",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for ca.crt, tls.crt, tls.key.")
    ] = Path("webhook-certs"),
    days: Annotated[int, typer.Option(min=1, max=3650, help="Validity in days.")] = 365,
    extra_name: Annotated[
        list[str] | None,
        typer.Option("--extra-name", help="Additional DNS name or IP in the certificate."),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Generate a CA and a serving certificate for SERVICE.NAMESPACE.svc; print the caBundle."""
    from modelreg.webhook import certs as certs_mod

    with Command(json_output):
        made = certs_mod.generate(
            service, namespace, days=days, extra_names=tuple(extra_name or ())
        )
        paths = certs_mod.write(made, out)
        if json_output:
            print_json(
                {
                    "files": paths,
                    "caBundle": made.ca_bundle,
                    "dnsNames": certs_mod.service_names(service, namespace),
                }
            )
            return
        out_console.print(
            f"wrote {paths['ca']}, {paths['cert']}, {paths['key']} (key mode 0600)",
            markup=False,
        )
        out_console.print(
            f"create the Secret:\n  kubectl -n {namespace} create secret tls {service}-tls "
            f"--cert={paths['cert']} --key={paths['key']}",
            markup=False,
        )
        out_console.print("caBundle for the webhook configurations:", markup=False)
        out_console.print(made.ca_bundle, markup=False, soft_wrap=True)


register = registrar(webhook_app)
