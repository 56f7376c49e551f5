"""``modelreg webhook``: serve the admission webhook; make its serving certificate."""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
from pathlib import Path
from typing import Annotated

import typer
from modelreg_cli.options import JsonOpt, PolicyOpt


def register(app: typer.Typer) -> None:
    """Add the ``webhook`` command group to the modelreg CLI."""
    webhook_app = typer.Typer(
        name="webhook",
        help="Kubernetes admission webhook: only verified models run.",
        no_args_is_help=True,
    )

    @webhook_app.command("serve")
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
                help="Seconds per decision; keep below the webhook's timeoutSeconds. "
                "No decision in time = denial.",
            ),
        ] = 8.0,
        cache_ttl: Annotated[
            float, typer.Option(help="Seconds an allow decision is cached.")
        ] = 300.0,
        negative_ttl: Annotated[
            float, typer.Option(help="Seconds a deny decision is cached.")
        ] = 15.0,
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
        docker_config: Annotated[
            Path | None,
            typer.Option("--docker-config", help="Registry credentials (docker config.json)."),
        ] = None,
        plain_http: Annotated[
            bool, typer.Option("--plain-http", help="HTTP to registries.")
        ] = False,
        insecure: Annotated[
            bool, typer.Option("--insecure", help="Skip registry TLS checks.")
        ] = False,
        ca_file: Annotated[
            Path | None, typer.Option("--ca-file", help="CA file for registries.")
        ] = None,
        log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    ) -> None:
        """Serve POST /validate and /mutate over HTTPS, plus /healthz, /readyz, /metrics."""
        import logging

        from modelreg_cli import main as cli

        from modelreg.client import Client, RemoteOptions
        from modelreg.errors import InvalidInputError
        from modelreg.policy import load_policies
        from modelreg.webhook.engine import Engine, EngineConfig
        from modelreg.webhook.server import ServerConfig
        from modelreg.webhook.server import serve as run_server

        with cli._errors(False):
            if unmatched_models not in ("deny", "warn", "allow"):
                raise InvalidInputError("--unmatched-models must be deny, warn or allow")
            if unmatched_images not in ("deny", "warn", "allow"):
                raise InvalidInputError(
                    f"--unmatched-images must be deny, warn or allow, not {unmatched_images!r}"
                )
            for f in (tls_cert, tls_key):
                if not f.is_file():
                    raise InvalidInputError(
                        f"{str(f)!r} is not a file",
                        hint="create them with `modelreg webhook certs` or cert-manager",
                    )
            logging.basicConfig(
                level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
            )
            policies = load_policies(policy)
            base = cli._options(plain_http, insecure, ca_file)
            options = RemoteOptions(
                plain_http=base.plain_http,
                insecure=base.insecure,
                ca_file=base.ca_file,
                docker_config=str(docker_config) if docker_config else None,
                on_warning=logging.getLogger("modelreg.webhook").warning,
                fsync=False,
                # a stuck registry must not hold a worker long after the budget denied
                timeout=budget,
            )
            engine = Engine(
                policies,
                Client(options),
                EngineConfig(
                    budget=budget,
                    cache_ttl=cache_ttl,
                    negative_ttl=negative_ttl,
                    tag_ttl=tag_ttl,
                    unmatched_models=unmatched_models,  # type: ignore[arg-type]
                    unmatched_images=unmatched_images,  # type: ignore[arg-type]
                    require_pinned=require_pinned,
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
                ),
            )

    @webhook_app.command("certs")
    def certs(
        service: Annotated[str, typer.Option(help="Service name.")] = "modelreg-webhook",
        namespace: Annotated[
            str, typer.Option(help="Namespace of the service.")
        ] = "modelreg-system",
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
        from modelreg_cli import main as cli
        from modelreg_cli.render import out_console, print_json

        from modelreg.webhook import certs as certs_mod

        with cli._errors(json_output):
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

    app.add_typer(webhook_app, name="webhook")
