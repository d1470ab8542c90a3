"""What a cold start does differently, seen from outside: the same objects and log lines.

A folder's first read starts before the rest of the program loads, its
documents come back from the worker processes already frozen, and the
collector neither walks the first read's objects nor the first build's
afterwards. None of it may change what reaches the store, what the log
says, or what is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_file_source_scale import TRICKY_YAML, typed

from xds_ingress import gc_pause, ir
from xds_ingress.cache import DEFAULT_GROUP, SnapshotCache
from xds_ingress.pipeline import Pipeline
from xds_ingress.sources import file_parse
from xds_ingress.sources.file import FileSource
from xds_ingress.sources.objects import KubeObject, freeze
from xds_ingress.store import Store

LOGGER = "xds_ingress.sources"


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    # What a test froze goes back to the collector's oldest generation.
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_a_pause_that_asks_freezes_what_was_made_inside_when_the_last_pause_ends() -> None:
    gc.enable()
    gc.unfreeze()
    inside = threading.Event()
    leave = threading.Event()

    def other() -> None:
        with gc_pause.paused():
            inside.set()
            leave.wait(timeout=10)

    thread = threading.Thread(target=other)
    with gc_pause.paused(freeze=True):
        made = [[index] for index in range(10_000)]
        thread.start()
        assert inside.wait(timeout=10)
    # The other thread's pause still holds: no freeze, no collector yet.
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0
    leave.set()
    thread.join(timeout=10)
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(made)
    # A pause that does not ask leaves the heap as it is.
    gc.unfreeze()
    with gc_pause.paused():
        more = [[index] for index in range(1000)]
    assert gc.get_freeze_count() == 0
    assert len(more) == 1000


@pytest.mark.parametrize("text", TRICKY_YAML)
def test_a_document_read_frozen_is_the_document_read_and_then_frozen(text: str) -> None:
    if "self:" in text:
        # Recursive, so it cannot be frozen: left as PyYAML built it.
        got = file_parse.load_yaml(text, frozen=True)
        assert got["self"][0] is got["self"]
        return
    try:
        expected = freeze(file_parse.load_yaml(text))
    except yaml.YAMLError as error:
        with pytest.raises(type(error)):
            file_parse.load_yaml(text, frozen=True)
        return
    got = file_parse.load_yaml(text, frozen=True)
    assert typed(got) == typed(expected)


def _mutable_parts(value: Any) -> list[str]:
    if isinstance(value, types.MappingProxyType):
        return [part for item in value.values() for part in _mutable_parts(item)]
    if isinstance(value, tuple):
        return [part for item in value for part in _mutable_parts(item)]
    if isinstance(value, dict | list | set):
        return [type(value).__name__]
    return []


def _odd_folder(folder: Path, *, files: int) -> list[str]:
    """Writes the folder; its files' paths, sorted."""
    service = (
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
        "spec: {{ports: [{{port: 80}}]}}\n"
    )
    for index in range(files):
        (folder / f"svc-{index:03d}.yaml").write_text(service.format(name=f"svc-{index:03d}"))
    # Every shape of document the file source treats specially.
    (folder / "svc-005.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n  - 42\n  - [a, list]\n"
        "  - {apiVersion: v1, kind: Service, metadata: {name: listed},\n"
        "     spec: {ports: [{port: 1}]}}\n"
        "---\n- a\n- top-level list\n"
        "---\nkind: List\nitems: {not: a list}\n"
        "---\nplain scalar\n"
        "---\nbase: &b {apiVersion: v1, kind: Service}\nmetadata: {name: merged}\n<<: *b\n"
    )
    (folder / "svc-006.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: selfish}\nspec: &s [*s]\n"
    )
    (folder / "svc-007.json").write_text(
        '{"apiVersion": "v1", "kind": "List", "items": [7, {"apiVersion": "v1", '
        '"kind": "Service", "metadata": {"name": "from-json"}}]}'
    )
    return sorted(str(path) for path in folder.iterdir())


def _read(folder: Path, *, workers: int, caplog: pytest.LogCaptureFixture) -> tuple[Any, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        objects = FileSource(folder, workers=workers).scan()
    assert objects is not None
    return objects, [r.getMessage() for r in caplog.records if r.name.startswith(LOGGER)]


def test_documents_frozen_on_workers_make_the_objects_and_warnings_read_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_parse, "POOL_MIN_FILES", 20)
    monkeypatch.setattr(file_parse, "CHUNK_FILES", 7)
    _odd_folder(tmp_path, files=40)
    here, here_warnings = _read(tmp_path, workers=1, caplog=caplog)
    pooled, pooled_warnings = _read(tmp_path, workers=2, caplog=caplog)

    def described(objects: tuple[KubeObject, ...]) -> list[tuple[str, str, str, Any]]:
        return [(o.kind, o.name, o.source, typed(o.body)) for o in objects]

    assert described(pooled) == described(here)
    assert pooled_warnings == here_warnings
    names = {o.name for o in pooled}
    assert {"listed", "merged", "from-json"} <= names
    listed = str(tmp_path / "svc-005.yaml")
    assert {
        f"{listed}: document 1 (line 1) item 1: expected a mapping, got int; ignored",
        f"{listed}: document 1 (line 1) item 2: expected a mapping, got list; ignored",
        f"{listed}: document 2 (line 9): expected a mapping, got list; ignored",
        f"{listed}: document 3 (line 12): List has no items list; ignored",
    } <= set(pooled_warnings)
    assert any("refers to itself or is nested too deeply" in line for line in pooled_warnings)
    json_file = str(tmp_path / "svc-007.json")
    assert f"{json_file} item 1: expected a mapping, got int; ignored" in pooled_warnings
    for obj in pooled:
        assert isinstance(obj.body, types.MappingProxyType)
        assert _mutable_parts(obj.body) == [], obj.name


async def test_a_first_read_started_early_is_published_by_run_without_a_second_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _odd_folder(tmp_path, files=5)
    reads: list[str] = []
    real = file_parse.read_file

    def counting(path: str, *, frozen: bool = False) -> tuple[file_parse.Item, ...]:
        reads.append(path)
        return real(path, frozen=frozen)

    monkeypatch.setattr(file_parse, "read_file", counting)
    source = FileSource(tmp_path, workers=1, poll_interval=0.01)
    source.start_first_read()
    store = Store()
    task = asyncio.create_task(source.run(store))
    try:
        await asyncio.wait_for(source.synced.wait(), timeout=10)
        await asyncio.sleep(0.1)  # several polls of an unchanged folder
        assert sorted(reads) == files
        assert {obj.name for obj in store.view().objects("Service")} >= {
            "svc-000",
            "listed",
            "from-json",
        }
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_first_read_that_fails_stops_run_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FileSource(tmp_path, workers=1)

    def broken() -> None:
        raise OSError("no such luck")

    monkeypatch.setattr(source, "scan", broken)
    source.start_first_read()
    with pytest.raises(OSError, match="no such luck"):
        await asyncio.wait_for(source.run(Store()), timeout=10)


def test_a_control_plane_for_a_folder_loads_no_kubernetes_client() -> None:
    # The client is most of the program's import time, spent before a cold
    # start's first publish; only --source kubernetes needs it.
    script = (
        "import sys\n"
        "import xds_ingress.app, xds_ingress.cli\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes')\n"
        "print(len(loaded), loaded[:3])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith("0 "), done.stdout


async def test_the_first_build_pauses_the_collector_and_leaves_the_heap_frozen() -> None:
    gc.enable()
    gc.unfreeze()
    collector_on: list[bool] = []
    frozen_before_build: list[int] = []

    def translate() -> ir.Translation:
        collector_on.append(gc.isenabled())
        frozen_before_build.append(gc.get_freeze_count())
        return ir.Translation(config=ir.Config())

    cache = SnapshotCache()
    pipeline = Pipeline(translate=translate, cache=cache, group=DEFAULT_GROUP)
    synced = asyncio.Event()
    synced.set()
    task = asyncio.create_task(pipeline.run(synced=synced))
    try:
        await asyncio.wait_for(pipeline.first_published.wait(), timeout=10)
        assert collector_on == [False]
        # The store as read was frozen before the build, the build's after it.
        assert frozen_before_build[0] > 0
        assert gc.get_freeze_count() > frozen_before_build[0]
        assert gc.isenabled()
        # Later builds pause too, and freeze nothing more (frozen objects
        # that die leave the count).
        frozen = gc.get_freeze_count()
        pipeline.changed()
        await asyncio.sleep(0.3)
        assert collector_on == [False, False]
        assert gc.get_freeze_count() <= frozen
        assert gc.isenabled()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
