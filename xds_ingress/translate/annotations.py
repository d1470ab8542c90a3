"""Per-object settings read from annotations: ours (`xds-ingress.io/`) and ingress-nginx's.

Every value is checked here. A value we cannot use is reported on the object
that carries it, naming the annotation, and the default is used instead: a
typo must never cost traffic, and Envoy must never be sent a value it refuses.

Durations of our own annotations are written with a unit, as in Go and
Kubernetes ("500ms", "30s", "5m", "1h30m"); "0" means "none". ingress-nginx's
timeouts are whole seconds, as ingress-nginx reads them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from xds_ingress import ir
from xds_ingress.sources.objects import KubeObject
from xds_ingress.translate.findings import Findings

PREFIX = "xds-ingress.io/"
# On an Ingress: apply to every route it defines.
GRPC_TIMEOUT_MAX = PREFIX + "grpc-timeout-max"
STREAM_IDLE_TIMEOUT = PREFIX + "stream-idle-timeout"
RETRY_ON = PREFIX + "retry-on"
RETRIES = PREFIX + "retries"
LOAD_BALANCER = PREFIX + "load-balancer"
HASH_HEADER = PREFIX + "hash-header"
GRPC_ONLY = PREFIX + "grpc-only"
CLIENT_CA_SECRET = PREFIX + "client-ca-secret"
CLIENT_CERT = PREFIX + "client-cert"
BACKEND_CA_SECRET = PREFIX + "backend-ca-secret"
BACKEND_SNI = PREFIX + "backend-sni"
# On a Service: how Envoy checks its endpoints.
HEALTH_CHECK = PREFIX + "health-check"
HEALTH_CHECK_SERVICE = PREFIX + "health-check-service"

NGINX_PREFIX = "nginx.ingress.kubernetes.io/"
NGINX_BACKEND_PROTOCOL = NGINX_PREFIX + "backend-protocol"
NGINX_PROXY_READ_TIMEOUT = NGINX_PREFIX + "proxy-read-timeout"
NGINX_PROXY_SEND_TIMEOUT = NGINX_PREFIX + "proxy-send-timeout"

INGRESS_ANNOTATIONS = frozenset(
    {
        GRPC_TIMEOUT_MAX,
        STREAM_IDLE_TIMEOUT,
        RETRY_ON,
        RETRIES,
        LOAD_BALANCER,
        HASH_HEADER,
        GRPC_ONLY,
        CLIENT_CA_SECRET,
        CLIENT_CERT,
        BACKEND_CA_SECRET,
        BACKEND_SNI,
    }
)
SERVICE_ANNOTATIONS = frozenset({HEALTH_CHECK, HEALTH_CHECK_SERVICE})

INVALID_ANNOTATION = "InvalidAnnotation"
MAX_RETRIES = 10
# Far beyond any sensible timeout, far below what Envoy's Duration can hold.
MAX_DURATION_MS = 30 * 24 * 3600 * 1000

# ingress-nginx's names → how Envoy talks to the backend. HTTP2 is h2c in
# ingress-nginx too (grpc_pass without TLS is what GRPC means there).
_BACKEND_PROTOCOLS = {
    "GRPC": ir.UpstreamProtocol.H2C,
    "HTTP2": ir.UpstreamProtocol.H2C,
    "GRPCS": ir.UpstreamProtocol.H2,
    "HTTP": ir.UpstreamProtocol.HTTP1,
}
_DURATION = re.compile(r"(?:(\d+)(ms|h|m|s))")
_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_HEALTH_CHECK_KINDS = ("grpc", "none")
# gRPC service names are dotted identifiers; anything else can never match.
_GRPC_SERVICE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
# An HTTP field name (RFC 9110 token), lowercase as HTTP/2 carries it; no
# pseudo-headers.
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
# ingress-nginx's values that say the backend speaks gRPC (HTTP2 does not).
_GRPC_BACKEND_PROTOCOLS = frozenset({"GRPC", "GRPCS"})
_CLIENT_CERT_MODES = {"required": True, "optional": False}
_BOOLEANS = {"true": True, "false": False}
# A Kubernetes object name (RFC 1123 subdomain).
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# A DNS name for SNI.
_SNI = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendOptions:
    """What an Ingress asks of the Envoy clusters of the Services it routes to.

    `ca_secret` names a Secret (same namespace) whose ca.crt verifies a
    GRPCS backend; `sni` None sends the Service's DNS name, "" none.
    """

    load_balancer: ir.LoadBalancer = ir.LoadBalancer.ROUND_ROBIN
    ca_secret: str | None = None
    sni: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCertificates:
    """Client certificates checked against the ca.crt of Secret `ca_secret` (same namespace)."""

    ca_secret: str
    required: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressOptions:
    """What an Ingress's annotations ask of its routes and backends."""

    policy: ir.RoutePolicy = field(default_factory=ir.RoutePolicy)
    # None: the Service port decides (appProtocol, port name).
    backend_protocol: ir.UpstreamProtocol | None = None
    backend: BackendOptions = field(default_factory=BackendOptions)
    client_certificates: ClientCertificates | None = None


def ingress_options(ingress: KubeObject, *, findings: Findings) -> IngressOptions:
    annotations = ingress.annotations
    report = _Reporter(ingress, findings=findings)
    for name in sorted(annotations):
        if name.startswith(PREFIX) and name not in INGRESS_ANNOTATIONS:
            hint = " (it belongs on the Service)" if name in SERVICE_ANNOTATIONS else ""
            report.invalid(name, f"is not an Ingress annotation of xds-ingress{hint}; ignored")
    defaults = ir.RoutePolicy()
    grpc_timeout_max = report.duration(annotations, GRPC_TIMEOUT_MAX)
    backend = _backend_options(annotations, report=report)
    client_certificates = _client_certificates(annotations, report=report)
    _check_applies(ingress, report=report)
    policy = ir.RoutePolicy(
        grpc_timeout_max_ms=(
            defaults.grpc_timeout_max_ms if grpc_timeout_max is None else grpc_timeout_max
        ),
        stream_idle_timeout_ms=_stream_idle_timeout(annotations, report=report),
        retry_on=_retry_on(annotations, report=report) or defaults.retry_on,
        num_retries=_retries(annotations, report=report, default=defaults.num_retries),
        hash_header=_hash_header(annotations, backend=backend, report=report),
        grpc_only=_grpc_only(annotations, report=report),
        client_certificate_required=(
            client_certificates is not None and client_certificates.required
        ),
    )
    return IngressOptions(
        policy=policy,
        backend_protocol=_backend_protocol(annotations, report=report),
        backend=backend,
        client_certificates=client_certificates,
    )


def _check_applies(ingress: KubeObject, *, report: _Reporter) -> None:
    """Report annotations that cannot do what they say on this Ingress."""
    annotations = ingress.annotations
    protocol = (annotations.get(NGINX_BACKEND_PROTOCOL) or "").strip().upper()
    for name in (BACKEND_CA_SECRET, BACKEND_SNI):
        if name in annotations and protocol != "GRPCS":
            # Only GRPCS speaks TLS to the backend; nothing to verify otherwise.
            report.invalid(name, f"needs {NGINX_BACKEND_PROTOCOL}: GRPCS; ignored")
    spec = ingress.body.get("spec")
    has_tls = isinstance(spec, Mapping) and bool(spec.get("tls"))
    if CLIENT_CA_SECRET in annotations and not has_tls:
        report.invalid(
            CLIENT_CA_SECRET,
            "the Ingress has no spec.tls, so no client can present a certificate; "
            "routes that require one answer 403",
        )


def backend_options(ingress: KubeObject, *, findings: Findings) -> BackendOptions:
    """The cluster options an Ingress asks for (each bad value reported on it)."""
    return _backend_options(ingress.annotations, report=_Reporter(ingress, findings=findings))


def client_certificates(ingress: KubeObject, *, findings: Findings) -> ClientCertificates | None:
    """The client certificates an Ingress's TLS hosts require; None: none."""
    return _client_certificates(ingress.annotations, report=_Reporter(ingress, findings=findings))


def service_health_check(service: KubeObject, *, findings: Findings) -> ir.GrpcHealthCheck | None:
    """The active health check a Service opts into; None without one."""
    annotations = service.annotations
    report = _Reporter(service, findings=findings)
    kind = annotations.get(HEALTH_CHECK)
    service_name = annotations.get(HEALTH_CHECK_SERVICE)
    if kind is None:
        if service_name is not None:
            report.invalid(HEALTH_CHECK_SERVICE, f"needs {HEALTH_CHECK}: grpc; ignored")
        return None
    if kind.strip().lower() not in _HEALTH_CHECK_KINDS:
        report.invalid(HEALTH_CHECK, f"{kind!r} is not one of {', '.join(_HEALTH_CHECK_KINDS)}")
        return None
    if kind.strip().lower() == "none":
        return None
    if service_name is None or service_name == "":
        return ir.GrpcHealthCheck()
    if not _GRPC_SERVICE.fullmatch(service_name):
        report.invalid(
            HEALTH_CHECK_SERVICE,
            f"{service_name!r} is not a gRPC service name (like pkg.Service); "
            "checking the whole server instead",
        )
        return ir.GrpcHealthCheck()
    return ir.GrpcHealthCheck(service=service_name)


class _Reporter:
    """Reads annotation values of one object, reporting each bad one on it."""

    def __init__(self, obj: KubeObject, *, findings: Findings) -> None:
        self._obj = obj
        self._findings = findings

    def invalid(self, annotation: str, problem: str) -> None:
        self._findings.rejected(
            self._obj,
            reason=INVALID_ANNOTATION,
            message=f"annotation {annotation}: {problem}",
        )

    def duration(self, annotations: Mapping[str, str], name: str) -> int | None:
        """Milliseconds, or None when absent or invalid (then reported)."""
        value = annotations.get(name)
        if value is None:
            return None
        parsed = parse_duration_ms(value)
        if parsed is None:
            self.invalid(
                name,
                f"{value!r} is not a duration like 30s, 5m or 1h30m "
                "(at most 720h); the default is used",
            )
        return parsed

    def seconds(self, annotations: Mapping[str, str], name: str) -> int | None:
        value = annotations.get(name)
        if value is None:
            return None
        text = value.strip()
        # The length check first: int() refuses a string of over 4300 digits.
        if (
            not text.isascii()
            or not text.isdigit()
            or len(text) > 12
            or int(text) * 1000 > MAX_DURATION_MS
        ):
            self.invalid(name, f"{value!r} is not a whole number of seconds; the default is used")
            return None
        return int(text) * 1000


def parse_duration_ms(value: str) -> int | None:
    """A Go-style duration ("1h30m", "250ms", "0") in milliseconds, None if not one."""
    text = value.strip()
    if text == "0":
        return 0
    # A few dozen characters hold any duration up to the maximum; a longer
    # one would only make int() parse (or refuse) thousands of digits.
    if not text or len(text) > 64 or _DURATION.sub("", text):
        return None  # something besides number+unit pairs
    total = sum(int(number) * _DURATION_UNITS_MS[unit] for number, unit in _DURATION.findall(text))
    return total if total <= MAX_DURATION_MS else None


def _stream_idle_timeout(annotations: Mapping[str, str], *, report: _Reporter) -> int | None:
    ours = report.duration(annotations, STREAM_IDLE_TIMEOUT)
    # ingress-nginx times each direction on its own; Envoy's idle timer is
    # reset by frames either way, so the longer of the two cuts no stream
    # that ingress-nginx would have kept. Both are read (and checked) even
    # when ours wins, so a bad value is still reported.
    nginx = [
        seconds
        for name in (NGINX_PROXY_READ_TIMEOUT, NGINX_PROXY_SEND_TIMEOUT)
        if (seconds := report.seconds(annotations, name)) is not None
    ]
    if ours is not None:
        return ours
    return max(nginx) if nginx else None


def _retry_on(annotations: Mapping[str, str], *, report: _Reporter) -> tuple[str, ...] | None:
    value = annotations.get(RETRY_ON)
    if value is None:
        return None
    # Accept the names as gRPC spells them too (DEADLINE_EXCEEDED).
    codes = {part.strip().lower().replace("_", "-") for part in value.split(",")} - {""}
    unknown = sorted(codes - ir.GRPC_RETRY_CODES)
    if not codes or unknown:
        what = ", ".join(repr(code) for code in unknown) if unknown else "no code"
        report.invalid(
            RETRY_ON,
            f"{what}: expected a comma-separated list of "
            f"{', '.join(sorted(ir.GRPC_RETRY_CODES))}; the default (unavailable) is used",
        )
        return None
    return tuple(sorted(codes))


def _retries(annotations: Mapping[str, str], *, report: _Reporter, default: int) -> int:
    value = annotations.get(RETRIES)
    if value is None:
        return default
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 3 or int(text) > MAX_RETRIES:
        report.invalid(
            RETRIES, f"{value!r} is not a whole number from 0 to {MAX_RETRIES}; {default} is used"
        )
        return default
    return int(text)


def _backend_protocol(
    annotations: Mapping[str, str], *, report: _Reporter
) -> ir.UpstreamProtocol | None:
    value = annotations.get(NGINX_BACKEND_PROTOCOL)
    if value is None:
        return None
    protocol = _BACKEND_PROTOCOLS.get(value.strip().upper())
    if protocol is None:
        report.invalid(
            NGINX_BACKEND_PROTOCOL,
            f"{value!r} is not supported by xds-ingress (use one of "
            f"{', '.join(sorted(_BACKEND_PROTOCOLS))}); the Service port decides",
        )
    return protocol


def _load_balancer(annotations: Mapping[str, str], *, report: _Reporter) -> ir.LoadBalancer | None:
    value = annotations.get(LOAD_BALANCER)
    if value is None:
        return None
    try:
        return ir.LoadBalancer(value.strip().lower())
    except ValueError:
        report.invalid(
            LOAD_BALANCER,
            f"{value!r} is not one of {', '.join(ir.LoadBalancer)}; round-robin is used",
        )
        return None


def _backend_options(annotations: Mapping[str, str], *, report: _Reporter) -> BackendOptions:
    chosen = _load_balancer(annotations, report=report)
    hashes = HASH_HEADER in annotations and _header_name(annotations[HASH_HEADER]) is not None
    if chosen is None:
        # A hash header alone says what is wanted: the same header value,
        # the same endpoint.
        chosen = ir.LoadBalancer.RING_HASH if hashes else ir.LoadBalancer.ROUND_ROBIN
    elif chosen is ir.LoadBalancer.RING_HASH and not hashes:
        # Ring hash without a hash policy hashes nothing useful: every call
        # would land on a random endpoint, worse than round robin.
        report.invalid(
            LOAD_BALANCER, f"ring-hash needs {HASH_HEADER} (a request header); round-robin is used"
        )
        chosen = ir.LoadBalancer.ROUND_ROBIN
    ca_secret = annotations.get(BACKEND_CA_SECRET)
    if ca_secret is not None and not _OBJECT_NAME.fullmatch(ca_secret.strip()):
        # Not ignored: a backend that asked to be verified must not be
        # reached unverified. The resolver answers its routes 503.
        report.invalid(BACKEND_CA_SECRET, f"{ca_secret!r} is not a Secret name")
    sni = annotations.get(BACKEND_SNI)
    if sni is not None and sni.strip() and not _SNI.fullmatch(sni.strip()):
        report.invalid(BACKEND_SNI, f"{sni!r} is not a DNS name; the Service's name is sent")
        sni = None
    return BackendOptions(
        load_balancer=chosen,
        ca_secret=None if ca_secret is None else ca_secret.strip(),
        sni=None if sni is None else sni.strip().lower(),
    )


def _header_name(value: str) -> str | None:
    name = value.strip().lower()
    return name if _HEADER_NAME.fullmatch(name) else None


def _hash_header(
    annotations: Mapping[str, str], *, backend: BackendOptions, report: _Reporter
) -> str | None:
    value = annotations.get(HASH_HEADER)
    if value is None:
        return None
    name = _header_name(value)
    if name is None:
        report.invalid(HASH_HEADER, f"{value!r} is not an HTTP header name; not hashed")
        return None
    if backend.load_balancer is not ir.LoadBalancer.RING_HASH:
        report.invalid(
            HASH_HEADER,
            f"only ring-hash hashes a header, not {backend.load_balancer}; ignored",
        )
        return None
    return name


def _grpc_only(annotations: Mapping[str, str], *, report: _Reporter) -> bool | None:
    value = annotations.get(GRPC_ONLY)
    if value is not None:
        chosen = _BOOLEANS.get(value.strip().lower())
        if chosen is not None:
            return chosen
        report.invalid(GRPC_ONLY, f"{value!r} is not true or false; decided by the backend")
    protocol = annotations.get(NGINX_BACKEND_PROTOCOL)
    if protocol is not None and protocol.strip().upper() in _GRPC_BACKEND_PROTOCOLS:
        return True
    return None


def _client_certificates(
    annotations: Mapping[str, str], *, report: _Reporter
) -> ClientCertificates | None:
    secret = annotations.get(CLIENT_CA_SECRET)
    mode = annotations.get(CLIENT_CERT)
    required = True
    if mode is not None:
        parsed = _CLIENT_CERT_MODES.get(mode.strip().lower())
        if parsed is None:
            # Fail closed: a typo must not turn "required" into "optional".
            report.invalid(
                CLIENT_CERT, f"{mode!r} is not one of {', '.join(_CLIENT_CERT_MODES)}; required"
            )
        else:
            required = parsed
    if secret is None:
        if mode is not None:
            report.invalid(CLIENT_CERT, f"needs {CLIENT_CA_SECRET}; ignored")
        return None
    # A bad name is kept (and reported when it is not found): the hosts then
    # answer 403 rather than serve without the checks that were asked for.
    return ClientCertificates(ca_secret=secret.strip(), required=required)
