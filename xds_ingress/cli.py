"""The `xds-ingress` command: serve, bootstrap, demo.

Flags are parsed and checked here and nowhere else; a bad value ends the
command with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from xds_ingress.logs import configure_logging
from xds_ingress.settings import (
    KUBERNETES_SOURCE,
    HostPort,
    ServerTls,
    ServeSettings,
    SettingError,
    parse_address,
    parse_host_port,
    parse_namespace,
    parse_namespaced_name,
    parse_port,
)

T = TypeVar("T")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _checked(parse: Callable[..., T], flag: str) -> Callable[[str], T]:
    def check(text: str) -> T:
        try:
            return parse(text, flag=flag)
        except SettingError as error:
            # argparse reports ArgumentTypeError messages verbatim.
            raise argparse.ArgumentTypeError(str(error).removeprefix(f"{flag}: ")) from None

    return check


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _connection_seconds(text: str) -> int:
    # Whole seconds, up to a day: an Envoy Duration takes any, but a longer
    # maximum age no longer rebalances anything.
    if not text.isascii() or not text.isdigit() or int(text) > 86_400:
        raise argparse.ArgumentTypeError(f"expected whole seconds from 0 to 86400, got {text!r}")
    return int(text)


def _add_logging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text for people, json (one object per line) for log collectors",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="xds-ingress", description="A gRPC ingress: xDS for Envoy")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    serve = commands.add_parser("serve", help="run the control plane")
    serve.add_argument(
        "--source",
        required=True,
        help="a folder of Kubernetes YAML, or 'kubernetes' to watch the cluster",
    )
    serve.add_argument(
        "--xds-address",
        type=_checked(parse_host_port, "--xds-address"),
        default=HostPort("127.0.0.1", 18000),
        help="where Envoys connect (HOST:PORT, default 127.0.0.1:18000)",
    )
    serve.add_argument(
        "--listen-address",
        type=_checked(parse_address, "--listen-address"),
        default="0.0.0.0",
        help="address Envoy's listeners bind (default 0.0.0.0)",
    )
    serve.add_argument("--http-port", type=_checked(parse_port, "--http-port"), default=8080)
    serve.add_argument("--https-port", type=_checked(parse_port, "--https-port"), default=8443)
    serve.add_argument(
        "--tls-min-version",
        choices=["1.2", "1.3"],
        default="1.2",
        help="oldest TLS version the HTTPS listener accepts (default 1.2)",
    )
    serve.add_argument(
        "--max-connection-duration",
        type=_connection_seconds,
        default=600,
        help="seconds before Envoy drains a client connection (GOAWAY), so long-lived "
        "clients rebalance over Envoy replicas; 0: never (default 600)",
    )
    serve.add_argument(
        "--holdoff",
        type=_positive_seconds,
        default=0.05,
        help=(
            "seconds to wait for more changes before a rebuild "
            "(a change after a quiet spell is built at once)"
        ),
    )
    serve.add_argument(
        "--max-holdoff",
        type=_positive_seconds,
        default=0.5,
        help="longest a change waits for a rebuild, in seconds",
    )
    serve.add_argument(
        "--poll-interval",
        type=_positive_seconds,
        default=0.25,
        help="with a folder --source: seconds between looks for changed files (default 0.25)",
    )
    serve.add_argument(
        "--admin-address",
        type=_checked(parse_host_port, "--admin-address"),
        default=None,
        help="also serve the admin API and CSDS here (HOST:PORT); "
        "they are always served on --xds-address",
    )
    serve.add_argument(
        "--metrics-address",
        type=_checked(parse_host_port, "--metrics-address"),
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics",
    )
    serve.add_argument(
        "--kubeconfig",
        default=None,
        help="with --source kubernetes: the kubeconfig file "
        "(default: the pod's service account, else $KUBECONFIG or ~/.kube/config)",
    )
    serve.add_argument(
        "--watch-namespace",
        type=_checked(parse_namespace, "--watch-namespace"),
        default=None,
        help="with --source kubernetes: watch only this namespace (default: all)",
    )
    serve.add_argument(
        "--publish-service",
        type=_checked(parse_namespaced_name, "--publish-service"),
        default=None,
        help="with --source kubernetes: NAMESPACE/NAME of the Envoy Service whose addresses "
        "(load balancer, else external IPs, else cluster IP) Ingresses show in their status",
    )
    serve.add_argument(
        "--leader-election-namespace",
        type=_checked(parse_namespace, "--leader-election-namespace"),
        default=None,
        help="with --source kubernetes: where the Lease electing the one replica that writes "
        "status lives (default: --publish-service's namespace, else --watch-namespace, "
        "else default)",
    )
    serve.add_argument(
        "--health-address",
        type=_checked(parse_host_port, "--health-address"),
        default=None,
        help="also serve gRPC health alone here (HOST:PORT), in plaintext, for kubelet's "
        "gRPC probes, which cannot present a client certificate",
    )
    security = serve.add_argument_group(
        "xDS and admin port security",
        "mTLS on --xds-address and --admin-address: pass all three files, or --insecure. "
        "The files are read again when they change (certificate renewal without a restart). "
        "--metrics-address and --health-address stay plaintext.",
    )
    security.add_argument(
        "--xds-tls-cert", type=Path, default=None, help="the server certificate (PEM chain)"
    )
    security.add_argument("--xds-tls-key", type=Path, default=None, help="its private key (PEM)")
    security.add_argument(
        "--xds-client-ca",
        type=Path,
        default=None,
        help="CA certificate(s) (PEM) that must have signed every client's certificate",
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        help="serve xDS and the admin API in plaintext, to anyone who connects (local use only)",
    )
    _add_logging(serve)

    bootstrap = commands.add_parser("bootstrap", help="print an Envoy bootstrap")
    bootstrap.add_argument(
        "--xds-address",
        type=_checked(parse_host_port, "--xds-address"),
        required=True,
        action="append",
        help="the control plane (HOST:PORT); repeat it for replicas Envoy fails over between",
    )
    bootstrap.add_argument("--node-id", required=True)
    bootstrap.add_argument("--node-cluster", required=True)
    bootstrap.add_argument(
        "--admin-address", type=_checked(parse_host_port, "--admin-address"), default=None
    )
    bootstrap.add_argument(
        "--sotw", action="store_true", help="state-of-the-world ADS instead of incremental"
    )
    client_tls = bootstrap.add_argument_group(
        "control plane connection",
        "mTLS to the control plane: pass the three paths (as Envoy sees them), or --insecure.",
    )
    client_tls.add_argument("--xds-tls-cert", default=None, help="Envoy's client certificate")
    client_tls.add_argument("--xds-tls-key", default=None, help="its private key")
    client_tls.add_argument(
        "--xds-ca", default=None, help="CA certificate(s) that signed the control plane's"
    )
    client_tls.add_argument(
        "--xds-server-name",
        default=None,
        help="the name the control plane's certificate must carry (default: the "
        "--xds-address host)",
    )
    client_tls.add_argument(
        "--insecure", action="store_true", help="plaintext to a `serve --insecure` control plane"
    )

    demo = commands.add_parser(
        "demo", help="run the local ingress: control plane, Envoy and two gRPC backends"
    )
    demo.add_argument("--examples", type=Path, default=Path("examples"))
    demo.add_argument("--http-port", type=_checked(parse_port, "--http-port"), default=8080)
    demo.add_argument("--xds-port", type=_checked(parse_port, "--xds-port"), default=18000)
    demo.add_argument("--admin-port", type=_checked(parse_port, "--admin-port"), default=9901)
    demo.add_argument("--sotw", action="store_true")
    _add_logging(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bootstrap":
        from xds_ingress.bootstrap import ClientTls, render_bootstrap

        files = _tls_files(
            parser,
            args,
            flags=("--xds-tls-cert", "--xds-tls-key", "--xds-ca"),
            extra=("--xds-server-name",),
        )
        document = render_bootstrap(
            xds_address=[str(address) for address in args.xds_address],
            node_id=args.node_id,
            node_cluster=args.node_cluster,
            admin_address=str(args.admin_address) if args.admin_address else None,
            delta=not args.sotw,
            tls=(
                ClientTls(
                    cert_file=str(files[0]),
                    key_file=str(files[1]),
                    ca_file=str(files[2]),
                    server_name=args.xds_server_name,
                )
                if files is not None
                else None
            ),
        )
        print(json.dumps(document, indent=2))
        return 0
    configure_logging(level=args.log_level, log_format=args.log_format)
    if args.command == "serve":
        settings = ServeSettings(
            source=args.source,
            xds_address=args.xds_address,
            listen_address=args.listen_address,
            http_port=args.http_port,
            https_port=args.https_port,
            holdoff_seconds=args.holdoff,
            max_holdoff_seconds=args.max_holdoff,
            kubeconfig=args.kubeconfig,
            watch_namespace=args.watch_namespace,
            admin_address=args.admin_address,
            metrics_address=args.metrics_address,
            health_address=args.health_address,
            poll_seconds=args.poll_interval,
            tls_min_version=args.tls_min_version,
            max_connection_duration_seconds=args.max_connection_duration,
            publish_service=args.publish_service,
            leader_election_namespace=(
                args.leader_election_namespace
                or (args.publish_service[0] if args.publish_service else None)
                or args.watch_namespace
                or "default"
            ),
        )
        if settings.source != KUBERNETES_SOURCE:
            if not Path(settings.source).is_dir():
                parser.exit(
                    2, f"xds-ingress: error: --source: {settings.source!r} is not a folder\n"
                )
            kube_only = (
                args.kubeconfig,
                args.watch_namespace,
                args.publish_service,
                args.leader_election_namespace,
            )
            if any(value is not None for value in kube_only):
                parser.exit(
                    2,
                    "xds-ingress: error: --kubeconfig, --watch-namespace, --publish-service "
                    "and --leader-election-namespace need --source kubernetes\n",
                )
        if settings.source == KUBERNETES_SOURCE:
            from xds_ingress.sources.kube_client import KubeConfigError, load_configuration

            # A missing cluster is the first thing to hear about, before security.
            try:
                load_configuration(kubeconfig=settings.kubeconfig)
            except KubeConfigError as error:
                parser.exit(2, f"xds-ingress: error: {error}\n")
        files = _tls_files(
            parser, args, flags=("--xds-tls-cert", "--xds-tls-key", "--xds-client-ca")
        )
        if files is not None:
            from xds_ingress.server.credentials import TlsFilesError, check_server_tls

            tls = ServerTls(cert_file=files[0], key_file=files[1], client_ca_file=files[2])
            try:
                check_server_tls(tls)
            except TlsFilesError as error:
                parser.exit(2, f"xds-ingress: error: {error}\n")
            settings = dataclasses.replace(settings, xds_tls=tls)
        if settings.source != KUBERNETES_SOURCE:
            return _serve_folder(settings)
        from xds_ingress.app import serve
        from xds_ingress.sources.kube_client import KubeConfigError

        try:
            return _run(serve(settings))
        except KubeConfigError as error:
            parser.exit(2, f"xds-ingress: error: {error}\n")
    if args.command == "demo":
        from xds_ingress.demo.run import DemoSettings, run_demo

        if not args.examples.is_dir():
            parser.exit(
                2, f"xds-ingress: error: --examples: {str(args.examples)!r} is not a folder\n"
            )
        return _run(
            run_demo(
                DemoSettings(
                    examples=args.examples,
                    http_port=args.http_port,
                    xds_port=args.xds_port,
                    admin_port=args.admin_port,
                    delta=not args.sotw,
                )
            )
        )
    parser.error(f"unknown command {args.command}")


def _serve_folder(settings: ServeSettings) -> int:
    from xds_ingress.sources.file import FileSource

    source = FileSource(Path(settings.source), poll_interval=settings.poll_seconds)
    # Reading a large folder is most of a cold start and needs nothing but
    # the folder: its workers parse while the rest of the program loads and
    # opens its ports (the read used to start 1.2 s after the process did).
    source.start_first_read()
    from xds_ingress.app import serve

    return _run(serve(settings, source=source))


def _tls_files(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    flags: tuple[str, str, str],
    extra: tuple[str, ...] = (),
) -> tuple[Path, Path, Path] | None:
    """The three mTLS files `flags` name, or None with --insecure; exits 2 on anything else."""

    def value(flag: str) -> object:
        return getattr(args, flag.removeprefix("--").replace("-", "_"))

    given = [flag for flag in (*flags, *extra) if value(flag) is not None]
    if args.insecure:
        if given:
            parser.exit(
                2, f"xds-ingress: error: --insecure and {', '.join(given)} exclude each other\n"
            )
        return None
    missing = [flag for flag in flags if value(flag) is None]
    if len(missing) == len(flags):
        parser.exit(
            2,
            f"xds-ingress: error: the control plane connection needs mTLS: pass {', '.join(flags)}"
            " (or --insecure for plaintext)\n",
        )
    if missing:
        parser.exit(2, f"xds-ingress: error: mTLS needs {', '.join(missing)} too\n")
    cert, key, ca = (Path(str(value(flag))) for flag in flags)
    return cert, key, ca


def _run(coroutine: object) -> int:
    try:
        asyncio.run(coroutine)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
