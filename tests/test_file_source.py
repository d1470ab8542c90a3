"""The file source over real files: what reaches the store, and what the log says."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from xds_ingress.sources.file import FileSource
from xds_ingress.store import Change, Store

POLL = 0.01
LOGGER = "xds_ingress.sources.file"


def service_yaml(name: str, *, ns: str = "default", port: int = 80) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
spec:
  ports:
    - port: {port}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def services(store: Store) -> dict[str, int]:
    """{name: first port} of every Service in the store."""
    return {
        obj.name: obj.body.get("spec", {}).get("ports", [{}])[0].get("port")
        for obj in store.view().objects("Service")
    }


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


@contextlib.asynccontextmanager
async def watching(directory: Path) -> AsyncIterator[tuple[FileSource, Store]]:
    store = Store()
    source = FileSource(directory, poll_interval=POLL)
    task = asyncio.create_task(source.run(store))
    try:
        await asyncio.wait_for(source.synced.wait(), timeout=2)
        yield source, store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 2.0
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(POLL)


async def a_few_polls() -> None:
    await asyncio.sleep(POLL * 10)


@pytest.fixture(autouse=True)
def _capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)


async def test_reads_every_yaml_and_json_file_below_the_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "two.yaml", service_yaml("a") + "---\n" + service_yaml("b", ns="other"))
    write(
        tmp_path / "nested" / "deeper" / "list.yml",
        "apiVersion: v1\nkind: List\nitems:\n"
        "  - {apiVersion: v1, kind: Service, metadata: {name: c}}\n"
        "  - {apiVersion: v1, kind: Service, metadata: {name: d}}\n",
    )
    write(tmp_path / "e.json", '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "e"}}')
    # Not read: other suffixes, hidden files, and a ConfigMap mount's hidden copies.
    write(tmp_path / "notes.txt", service_yaml("txt"))
    write(tmp_path / ".hidden.yaml", service_yaml("hidden"))
    write(tmp_path / "..2024_01_01" / "two.yaml", service_yaml("configmap-copy"))

    async with watching(tmp_path) as (_, store):
        found = {(obj.namespace, obj.name): obj.source for obj in store.view().objects("Service")}
    assert found == {
        ("default", "a"): str(tmp_path / "two.yaml"),
        ("other", "b"): str(tmp_path / "two.yaml"),
        ("default", "c"): str(tmp_path / "nested" / "deeper" / "list.yml"),
        ("default", "d"): str(tmp_path / "nested" / "deeper" / "list.yml"),
        ("default", "e"): str(tmp_path / "e.json"),
    }
    assert warnings(caplog) == []


async def test_follows_edits_additions_and_deletions(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", service_yaml("a"))
    async with watching(tmp_path) as (_, store):
        assert services(store) == {"a": 80}

        write(first, service_yaml("a", port=8080))
        await eventually(lambda: services(store) == {"a": 8080})

        second = write(tmp_path / "sub" / "b.yaml", service_yaml("b"))
        await eventually(lambda: services(store) == {"a": 8080, "b": 80})

        first.unlink()
        await eventually(lambda: services(store) == {"b": 80})

        second.rename(tmp_path / "renamed.yaml")
        await a_few_polls()
        await eventually(lambda: services(store) == {"b": 80})
        found = store.view().get("Service", "default", "b")
        assert found is not None and found.source == str(tmp_path / "renamed.yaml")


async def test_a_malformed_document_is_one_warning_and_the_rest_flows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.yaml"
    write(
        broken,
        service_yaml("before")
        + "---\nkind: Service\nmetadata: {name: [oops\n---\n"
        + service_yaml("after"),
    )
    write(tmp_path / "fine.yaml", service_yaml("fine"))
    async with watching(tmp_path) as (_, store):
        assert set(services(store)) == {"before", "after", "fine"}
        write(tmp_path / "fine.yaml", service_yaml("fine", port=81))  # other files still change
        await eventually(lambda: services(store)["fine"] == 81)
        await a_few_polls()
        (message,) = warnings(caplog)
        assert message.startswith(f"{broken}: document 2 (line 10): malformed YAML:")

        write(
            broken,
            service_yaml("before")
            + "---\n"
            + service_yaml("fixed")
            + "---\n"
            + service_yaml("after"),
        )
        await eventually(lambda: set(services(store)) == {"before", "fixed", "after", "fine"})
    assert len(warnings(caplog)) == 1


async def test_malformed_json_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "bad.json", '{"kind": "Service",')
    write(tmp_path / "good.yaml", service_yaml("good"))
    async with watching(tmp_path) as (_, store):
        await a_few_polls()
        assert set(services(store)) == {"good"}
    (message,) = warnings(caplog)
    assert message.startswith(f"{tmp_path / 'bad.json'}: malformed JSON")


async def test_documents_that_are_not_usable_objects_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path / "mixed.yaml",
        "\n---\n".join(
            [
                service_yaml("ok"),
                "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}",
                "- just\n- a list",
                "apiVersion: v1\nkind: Service\nmetadata: {namespace: x}",
                "apiVersion: v1\nmetadata: {name: no-kind}",
                "apiVersion: v1\nkind: List\nitems:\n  - 42\n"
                "  - {apiVersion: v1, kind: Service, metadata: {name: listed}}",
            ]
        ),
    )
    async with watching(tmp_path) as (_, store):
        await a_few_polls()
        assert set(services(store)) == {"ok", "listed"}
    assert warnings(caplog) == [
        f"{path}: document 2 (line 11): unsupported kind Widget (apiVersion example.com/v1) "
        "for 'w'; ignored",
        f"{path}: document 3 (line 15): expected a mapping, got list; ignored",
        f"{path}: document 4 (line 18): Service has no metadata.name; ignored",
        f"{path}: document 5 (line 22): object has no kind; ignored",
        f"{path}: document 6 (line 25) item 1: expected a mapping, got int; ignored",
    ]


async def test_an_unreadable_file_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    write(tmp_path / "good.yaml", service_yaml("good"))
    async with watching(tmp_path) as (_, store):
        await a_few_polls()
        assert set(services(store)) == {"good"}
    (message,) = warnings(caplog)
    assert message.startswith(f"{tmp_path / 'binary.yaml'}: cannot read file:")


async def test_the_first_file_by_path_wins_a_duplicate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "a.yaml", service_yaml("dup", port=1))
    write(tmp_path / "b.yaml", service_yaml("dup", port=2))
    async with watching(tmp_path) as (_, store):
        assert services(store) == {"dup": 1}
        write(
            tmp_path / "c.yaml", service_yaml("other")
        )  # a later change does not repeat the warning
        await eventually(lambda: "other" in services(store))
        await a_few_polls()
        (message,) = warnings(caplog)
        assert message == (
            f"{tmp_path / 'b.yaml'}: document 1 (line 1): Service default/dup is also defined in "
            f"{tmp_path / 'a.yaml'}: document 1 (line 1); ignored here"
        )

        (tmp_path / "a.yaml").unlink()
        await eventually(lambda: services(store) == {"dup": 2, "other": 80})


async def test_a_missing_folder_is_one_warning_until_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "later"
    async with watching(folder) as (_, store):
        await a_few_polls()
        assert len(store.view()) == 0
        (message,) = warnings(caplog)
        assert str(folder) in message
        write(folder / "a.yaml", service_yaml("a"))
        await eventually(lambda: set(services(store)) == {"a"})


async def test_an_untouched_folder_publishes_nothing_new(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", service_yaml("a"))
    async with watching(tmp_path) as (_, store):
        changes: list[Change] = []
        store.subscribe(changes.append)
        os.utime(path)  # touched, same content: re-read, but the store sees no change
        await a_few_polls()
        assert changes == []


def test_scan_reports_only_when_something_changed(tmp_path: Path) -> None:
    source = FileSource(tmp_path)
    assert source.scan() == ()  # the first scan always reports, even if empty
    assert source.scan() is None
    write(tmp_path / "a.yaml", service_yaml("a"))
    objects = source.scan()
    assert objects is not None and [obj.name for obj in objects] == ["a"]
    assert source.scan() is None


async def test_a_document_that_contains_itself_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        tmp_path / "loop.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: loop}\nspec: &x\n  self: *x\n---\n"
        + service_yaml("fine"),
    )
    async with watching(tmp_path) as (_, store):
        await a_few_polls()
        assert set(services(store)) == {"fine"}
    (message,) = warnings(caplog)
    assert "Service loop refers to itself" in message


async def test_a_single_file_can_be_the_source(tmp_path: Path) -> None:
    path = write(tmp_path / "only.yaml", service_yaml("a"))
    write(tmp_path / "ignored.yaml", service_yaml("b"))
    async with watching(path) as (_, store):
        assert set(services(store)) == {"a"}
        write(path, service_yaml("a", port=8080))
        await eventually(lambda: services(store) == {"a": 8080})
