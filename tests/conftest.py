"""Fixtures that own the real peers (tests/peers.py) and always stop them.

- `envoy_factory(bootstrap, ...)` starts an Envoy; every one is stopped at
  teardown, and when a test fails its Envoys' log tails join the report.
- `backend_factory(name, ...)` starts a demo Greeter backend in the test's
  event loop; every one is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from ingress_harness import Ingress
from peers import LOOPBACK, BackendFactory, EnvoyFactory, EnvoyProcess

from xds_ingress.demo.backend import GreeterBackend

# kube_cluster and kube_namespace: a real etcd and kube-apiserver (tests/kube_apiserver.py).
pytest_plugins = ["kube_apiserver"]

_ENVOYS = pytest.StashKey[list[EnvoyProcess]]()
# Enough of the log to see why a config was rejected, short enough to read.
_FAILURE_LOG_LINES = 60


@pytest.fixture
def envoy_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EnvoyFactory]:
    """Start Envoys for one test: `envoy = envoy_factory(bootstrap); await envoy.wait_ready()`.

    Each gets its own folder under tmp_path (bootstrap.json, envoy.log).
    `start=False` returns it unstarted, for tests that start it later.
    """
    envoys: list[EnvoyProcess] = []
    request.node.stash[_ENVOYS] = envoys

    def make(
        bootstrap: Mapping[str, Any],
        *,
        name: str | None = None,
        concurrency: int = 1,
        log_level: str = "info",
        component_log_level: str | None = None,
        base_id: int | None = None,
        extra_args: Sequence[str] = (),
        start: bool = True,
    ) -> EnvoyProcess:
        name = name or f"envoy-{len(envoys) + 1}"
        if any(envoy.name == name for envoy in envoys):
            raise ValueError(f"two Envoys named {name!r} in one test")
        envoy = EnvoyProcess(
            bootstrap=bootstrap,
            workdir=tmp_path / name,
            name=name,
            concurrency=concurrency,
            log_level=log_level,
            component_log_level=component_log_level,
            base_id=base_id,
            extra_args=extra_args,
        )
        # Tracked before starting, so even a start that fails halfway is stopped.
        envoys.append(envoy)
        if start:
            envoy.start()
        return envoy

    try:
        yield make
    finally:
        errors: list[BaseException] = []
        for envoy in envoys:
            try:
                envoy.terminate()
            except BaseException as error:  # keep stopping the others
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture
async def backend_factory() -> AsyncIterator[BackendFactory]:
    """Start demo Greeter backends: `backend = await backend_factory("a")`; `backend.port`."""
    backends: list[GreeterBackend] = []

    async def make(name: str, *, address: str = LOOPBACK, port: int = 0) -> GreeterBackend:
        backend = GreeterBackend(name=name, address=address, port=port)
        await backend.start()
        backends.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in backends:
            # No grace: whatever is still in flight at teardown is the test's leftovers.
            await backend.stop(grace=None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # Envoy says why it rejected a config or failed to connect only in its
    # log; put the tail in the failure report while the files still exist.
    if report.failed:
        for envoy in item.stash.get(_ENVOYS, []):
            report.sections.append(
                (
                    f"{envoy.name} log ({envoy.log_path})",
                    envoy.log_tail(lines=_FAILURE_LOG_LINES),
                )
            )
    return report


@pytest.fixture(params=["delta", "sotw"])
async def ingress_under_test(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Ingress]:
    """A control plane and one Envoy on a config folder, in each xDS variant.

    The Envoy reaches the control plane over mTLS, the production path.
    """
    under_test = Ingress(workdir=tmp_path, delta=request.param == "delta", mtls=True)
    yield under_test
    await under_test.stop()


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, GreeterBackend]]:
    """Four Greeter backends, "a" to "d", each answering with its own name."""
    started = {name: GreeterBackend(name=name) for name in ("a", "b", "c", "d")}
    for backend in started.values():
        await backend.start()
    yield started
    for backend in started.values():
        await backend.stop(grace=None)
