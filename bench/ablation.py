"""Data-plane ablation: what each part of the config xds-ingress renders costs Envoy per call.

    python -m bench --scenario data-plane-ablation --runs 5

The data-plane scenario finds xds-ingress's Envoy below the hand-tuned one;
this scenario says where the difference goes, so that the claim is
reproducible. The data-plane scenario's objects (one Service, its slice,
one Ingress) are built by the product's own code and rendered as a static
bootstrap (`render_static_bootstrap`: what xDS would have sent). Each
variant is that bootstrap with one part taken out (`config_parts.VARIANTS`),
or one group of parts (`config_parts.GROUPS`); `all` takes
every one of them out, and the hand-tuned config (`peer_configs`) stands
beside them. Every config runs in its own Envoy (the same binary,
`--concurrency 1`, on the servers' CPU, beside the grpc-go interop server);
each run drives each one at its maximum rate with ghz from the other CPU,
in an order that rotates from run to run, with the rendered config measured
again between every two others, and takes that Envoy's CPU time per call
(schedstat). A part's cost is the mean of the rendered config's CPU per
call just before and just after its variant, minus the variant's: the
machine's speed drifts within a run by more than most parts cost.

Issue 7 sets no target here: it asks to say what limits the data plane.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench import data_plane, envoy, ghz, peer_configs, phases
from bench.config_parts import GROUPS, VARIANTS, Bootstrap, variant_bootstrap
from bench.procs import (
    LOOPBACK,
    Child,
    free_port,
    spawn_interop_server,
    wait_until_accepting,
)
from bench.results import CaseResult, MetricSpec, TargetResult
from xds_ingress.resources.builder import ResourceBuilder
from xds_ingress.resources.static import render_static_bootstrap
from xds_ingress.sources.file import FileSource
from xds_ingress.store import Store
from xds_ingress.translate import translate

NAME: Final = "data-plane-ablation"
RENDERED: Final = "rendered"
ALL_REMOVED: Final = "all"
TUNED: Final = "tuned"


def removed_parts(config: str) -> tuple[str, ...]:
    """The VARIANTS a measured config takes out of the rendered one."""
    if config == RENDERED:
        return ()
    if config == ALL_REMOVED:
        return tuple(VARIANTS)
    if config in GROUPS:
        return GROUPS[config]
    if config in VARIANTS:
        return (config,)
    raise KeyError(f"{config!r} is not a config of the ablation")


def rendered_bootstrap(
    workdir: Path, *, backend_port: int, listen_port: int, admin_port: int
) -> Bootstrap:
    """The data-plane scenario's objects as xds-ingress renders them, as a static bootstrap."""
    folder = workdir / "objects"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "objects.yaml").write_text(data_plane.backend_objects(backend_port))
    # One file: read here, and the caller's heap left unfrozen.
    source = FileSource(folder, workers=1, freeze_heap=False)
    store = Store()
    store.replace_all(source.scan() or (), origin=source.origin)
    listeners = phases.settings(http_port=listen_port, https_port=free_port())
    translation = translate(store.view(), settings=listeners)
    return render_static_bootstrap(
        ResourceBuilder().build(translation.config),
        node_id="bench-ablation",
        node_cluster="bench",
        admin_address=f"{LOOPBACK}:{admin_port}",
    )


def config_names() -> tuple[str, ...]:
    return (RENDERED, *VARIANTS, *GROUPS, ALL_REMOVED, TUNED)


def _metric_specs() -> dict[str, MetricSpec]:
    specs = {
        "rendered_vs_tuned": MetricSpec("x", "rendered config's max rate / hand-tuned config's"),
        "all_vs_tuned": MetricSpec("x", "every part removed: max rate / hand-tuned config's"),
    }
    for name in config_names():
        label = _label(name)
        specs[f"{name}_cpu_us_per_call"] = MetricSpec("µs", f"{label}: Envoy CPU per call")
        if name != RENDERED:
            specs[f"{name}_saved_us"] = MetricSpec(
                "µs", f"{label}: CPU per call saved against the rendered config"
            )
    return specs


def _label(name: str) -> str:
    if name == RENDERED:
        return "the config xds-ingress renders"
    if name == ALL_REMOVED:
        return "every part taken out"
    if name == TUNED:
        return "the hand-tuned config"
    if name in GROUPS:
        return "without " + ", ".join(VARIANTS[part].what for part in GROUPS[name])
    return f"without {VARIANTS[name].what}"


METRICS: Final[Mapping[str, MetricSpec]] = _metric_specs()


@dataclass(frozen=True, slots=True)
class Measured:
    config: str
    cpu_us_per_call: float
    rate: float  # OK calls per second


def schedule(others: Sequence[str]) -> list[str]:
    """The rendered config before and after every other one: R, a, R, b, R, ..., R."""
    order = [RENDERED]
    for name in others:
        order += [name, RENDERED]
    return order


def paired(measured: Sequence[Measured]) -> dict[str, float]:
    """One run's sample: each config against the rendered config measured just before and after.

    This machine's speed drifts by tens of percent within minutes, more
    than most parts cost; a drift that is steady over the two neighbours'
    span cancels out of the difference.
    """
    sample: dict[str, float] = {}
    rate_vs_rendered: dict[str, float] = {}
    for before, one, after in zip(measured, measured[1:], measured[2:], strict=False):
        if one.config == RENDERED:
            continue
        if before.config != RENDERED or after.config != RENDERED:
            raise ValueError(f"{one.config} was not measured between two rendered configs")
        sample[f"{one.config}_cpu_us_per_call"] = one.cpu_us_per_call
        sample[f"{one.config}_saved_us"] = (
            before.cpu_us_per_call + after.cpu_us_per_call
        ) / 2 - one.cpu_us_per_call
        rate_vs_rendered[one.config] = one.rate / ((before.rate + after.rate) / 2)
    sample[f"{RENDERED}_cpu_us_per_call"] = statistics.median(
        one.cpu_us_per_call for one in measured if one.config == RENDERED
    )
    sample["rendered_vs_tuned"] = 1 / rate_vs_rendered[TUNED]
    sample["all_vs_tuned"] = rate_vs_rendered[ALL_REMOVED] / rate_vs_rendered[TUNED]
    return sample


@dataclass
class _Proxy:
    envoy: Child
    address: str


@dataclass
class AblationCase:
    seconds: float
    payload_bytes: int = 128
    concurrency: int = 32
    connections: int = 4
    _children: list[Child] = field(default_factory=list)
    _proxies: dict[str, _Proxy] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"unary {self.payload_bytes} B, max rate"

    @property
    def params(self) -> Mapping[str, Any]:
        return {
            "call": ghz.UNARY_CALL,
            "payload_bytes": self.payload_bytes,
            "seconds_per_measurement": self.seconds,
            "concurrency": self.concurrency,
            "connections": self.connections,
            "envoy_concurrency": 1,
            "load_cpus": list(data_plane.LOAD_CPU),
            "server_cpus": list(data_plane.SERVER_CPU),
            "variants": {name: VARIANTS[name].what for name in VARIANTS},
            "groups": {name: list(parts) for name, parts in GROUPS.items()},
        }

    def prepare(self, workdir: Path) -> dict[str, Any]:
        backend, backend_port = spawn_interop_server(
            workdir / "backend" / "backend.log", cpus=data_plane.SERVER_CPU
        )
        self._children.append(backend)
        wait_until_accepting(backend, backend_port, within_seconds=30)
        for name in config_names():
            listen, admin = free_port(), free_port()
            if name == TUNED:
                bootstrap = peer_configs.tuned_envoy(
                    listen_port=listen, admin_port=admin, backend_port=backend_port
                )
            else:
                rendered = rendered_bootstrap(
                    workdir / name, backend_port=backend_port, listen_port=listen, admin_port=admin
                )
                bootstrap = variant_bootstrap(rendered, removed_parts(name))
            config = envoy.write_bootstrap(bootstrap, workdir / name / "bootstrap.json")
            proxy = envoy.start(
                name=f"Envoy ({name})",
                config=config,
                workdir=workdir / name,
                cpus=data_plane.SERVER_CPU,
            )
            self._children.append(proxy)
            envoy.wait_live(
                proxy, admin, envoy.Expected(clusters=1, listeners=1), within_seconds=30
            )
            self._proxies[name] = _Proxy(proxy, f"{LOOPBACK}:{listen}")
            # A config Envoy loads but that fails calls would measure nothing.
            check = self._load(
                name, ghz.Load(seconds=1, max_calls=200, concurrency=4, connections=1)
            )
            if check.errors or check.ok == 0:
                raise RuntimeError(f"{name}: warm-up calls failed: {check.error_kinds}")
        # The first full-rate load grows an Envoy's heap and pools: in a
        # first run without this, the configs measured first cost up to 60%
        # more per call.
        for name in self._proxies:
            self._load(name, self._maximum(seconds=min(self.seconds, 2)))
        return {"configs": len(self._proxies)}

    def _maximum(self, *, seconds: float) -> ghz.Load:
        return ghz.Load(
            seconds=seconds,
            max_calls=2_000_000,
            concurrency=self.concurrency,
            connections=self.connections,
            skip_first=500,
        )

    def _load(self, name: str, load: ghz.Load) -> ghz.GhzResult:
        return ghz.run(
            target=self._proxies[name].address,
            authority=data_plane.HOST,
            load=load,
            payload_bytes=self.payload_bytes,
            cpus=len(data_plane.LOAD_CPU),
        )

    def run_once(self, index: int, workdir: Path) -> dict[str, float]:
        others = [name for name in self._proxies if name != RENDERED]
        shift = index % len(others)
        maximum = self._maximum(seconds=self.seconds)
        measured: list[Measured] = []
        for name in schedule(others[shift:] + others[:shift]):
            for child in self._children:
                child.check_alive()
            proxy = self._proxies[name].envoy
            cpu_before = proxy.cpu_seconds_precise()
            result = self._load(name, maximum)
            cpu = proxy.cpu_seconds_precise() - cpu_before
            if result.errors or result.ok == 0:
                raise RuntimeError(f"{name}: {result.errors} calls failed: {result.error_kinds}")
            measured.append(Measured(name, cpu / result.ok * 1e6, result.rps))
            # Let connections close and Envoy settle before the next config.
            time.sleep(0.5)
        return paired(measured)

    def close(self) -> None:
        for child in reversed(self._children):
            child.stop()
        self._children.clear()
        self._proxies.clear()


class DataPlaneAblation:
    name = NAME
    title = "Data-plane ablation: Envoy's CPU per call for each part of the rendered config"

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return METRICS

    def cases(self, *, quick: bool) -> Sequence[AblationCase]:
        return [AblationCase(seconds=2 if quick else 4)]

    def available(self) -> str | None:
        return data_plane.DataPlane().available()

    def targets(self, cases: Sequence[CaseResult]) -> list[TargetResult]:
        # Issue 7 asks what limits the data plane, with no threshold for it.
        return []
