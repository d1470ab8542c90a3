"""The file source on a folder large enough to be parsed on several processes.

What a user sees must not depend on how the folder was read: the same
objects, the same warnings (each naming its file and document, in file
order), the bad files skipped and the rest served to a real Envoy.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
import yaml
from ingress_harness import Ingress, endpoint_slice, ingress, routes_to, rule, service

from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.sources import file_parse
from xds_ingress.sources.file import FileSource
from xds_ingress.sources.objects import KubeObject

LOGGER = "xds_ingress.sources"
FILES = 60


@pytest.fixture(autouse=True)
def _small_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    # Real worker processes, on a folder small enough for a test: several
    # chunks, so results from both workers are interleaved back in order.
    monkeypatch.setattr(file_parse, "POOL_MIN_FILES", 20)
    monkeypatch.setattr(file_parse, "CHUNK_FILES", 7)


def app_documents(index: int) -> list[dict[str, Any]]:
    name = f"svc-{index:03d}"
    slice_ = endpoint_slice(name, 9)
    slice_["endpoints"] = [
        {"addresses": [f"127.0.{index}.{pod}"], "conditions": {"ready": True}} for pod in range(3)
    ]
    return [
        service(name),
        slice_,
        ingress(name, [rule(f"{name}.example.com", ("/", "Prefix", name))]),
    ]


def write_folder(folder: Path, files: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        (folder / f"svc-{index:03d}.yaml").write_text(yaml.safe_dump_all(app_documents(index)))
    # Bad input among them: each costs its own document or file, nothing else.
    (folder / "svc-010.yaml").write_text(
        yaml.safe_dump(app_documents(10)[0]) + "---\nkind: Service\nmetadata: {name: [oops\n"
    )
    (folder / "svc-020.yaml").write_bytes(b"\xff\xfe not utf-8")
    (folder / "svc-030.yaml").write_text(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\n- a list\n"
    )
    (folder / "nested").mkdir(exist_ok=True)
    (folder / "nested" / "extra.json").write_text(
        '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "from-json"}}'
    )


def read(folder: Path, *, workers: int, caplog: pytest.LogCaptureFixture) -> tuple[Any, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        objects = FileSource(folder, workers=workers).scan()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith(LOGGER)]
    assert objects is not None
    return objects, messages


def described(objects: tuple[KubeObject, ...]) -> list[tuple[str, str, str, str, Any]]:
    return [(o.kind, o.namespace, o.name, o.source, o.body) for o in objects]


def test_a_folder_read_on_worker_processes_is_the_folder_read_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_folder(tmp_path, FILES)
    here, here_warnings = read(tmp_path, workers=1, caplog=caplog)
    pooled, pooled_warnings = read(tmp_path, workers=2, caplog=caplog)

    assert described(pooled) == described(here)
    assert pooled_warnings == here_warnings
    # Every good file's three objects, the bad files' good documents, the JSON file.
    names = {(o.kind, o.name) for o in pooled}
    assert ("Service", "svc-010") in names and ("Ingress", "svc-010") not in names
    assert not any(name == "svc-020" for _, name in names)
    assert ("Service", "from-json") in names
    assert len(pooled) == 3 * (FILES - 3) + 1 + 1
    assert [message.split(": ", 1)[0] for message in pooled_warnings] == [
        f"{tmp_path / 'svc-010.yaml'}",
        f"{tmp_path / 'svc-020.yaml'}",
        f"{tmp_path / 'svc-030.yaml'}",
        f"{tmp_path / 'svc-030.yaml'}",
    ]
    assert "malformed YAML" in pooled_warnings[0]
    assert "cannot read file" in pooled_warnings[1]
    assert "unsupported kind Widget" in pooled_warnings[2]
    assert "expected a mapping, got list" in pooled_warnings[3]


def test_workers_that_cannot_start_leave_the_rest_to_this_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_folder(tmp_path, FILES)
    expected, _ = read(tmp_path, workers=1, caplog=caplog)

    real = file_parse._read_in_pool

    def breaks_after_some(
        paths: list[str], *, workers: int
    ) -> Iterator[tuple[str, tuple[file_parse.Item, ...]]]:
        for done, result in enumerate(real(paths, workers=workers)):
            if done == 10:
                raise BrokenProcessPool("a worker was killed")
            yield result

    monkeypatch.setattr(file_parse, "_read_in_pool", breaks_after_some)
    objects, messages = read(tmp_path, workers=2, caplog=caplog)
    assert described(objects) == described(expected)
    assert sum("reading here instead" in message for message in messages) == 1


def test_an_unchanged_folder_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_folder(tmp_path, FILES)
    source = FileSource(tmp_path, workers=2)
    assert source.scan() is not None
    read_paths: list[str] = []
    real = file_parse.read_file

    def counting(path: str) -> tuple[file_parse.Item, ...]:
        read_paths.append(path)
        return real(path)

    monkeypatch.setattr(file_parse, "read_file", counting)
    assert source.scan() is None
    assert read_paths == []
    (tmp_path / "svc-001.yaml").write_text(yaml.safe_dump_all(app_documents(1)[:1]))
    objects = source.scan()
    assert objects is not None
    assert read_paths == [str(tmp_path / "svc-001.yaml")]
    assert ("Ingress", "svc-001") not in {(o.kind, o.name) for o in objects}


# Documents where PyYAML's constructor does something a plain
# maps-lists-scalars reader could get wrong.
TRICKY_YAML = [
    "a: 1\nb: -2\nc: +3\nd: 0x1F\ne: 0o17\nf: 017\ng: 1_000\nh: 1:30\ni: 0\nj: 00\n",
    "a: 1.5\nb: .inf\nc: -.Inf\nd: .nan\ne: 1e3\nf: 6.8523015e+5\n",
    "a: yes\nb: No\nc: on\nd: OFF\ne: true\nf: False\ng: y\n",
    "a: ~\nb: null\nc:\nd: Null\ne: ''\n",
    "creationTimestamp: 2024-01-01T00:00:00Z\ndate: 2024-01-01\n",
    "1: a\nnull: b\ntrue: c\n1.5: d\n",
    "base: &b {x: 1, y: [1, 2]}\nother: *b\nmerged:\n  <<: *b\n  y: 3\n",
    "list: &l [a, b]\ntwice: [*l, *l]\n",
    "a: !!str 1\nb: !!int '3'\nc: !!float '2'\nd: !!binary aGVsbG8=\n",
    "a: !!set {x, y}\nb: !!omap [{x: 1}, {y: 2}]\nc: !!pairs [{x: 1}, {x: 2}]\n",
    "dup: 1\ndup: 2\n",
    "a: 'quoted 1'\nb: \"2\"\nc: |\n  block\n  text\nd: >\n  folded\n  text\n",
    "- 1\n- [2, [3, {four: 4}]]\n- {}\n- []\n",
    "plain scalar",
    "unicode: ünïcødé ✓\nkey with spaces: v\n? complex\n: value\n",
    "=: value\n",
    "a: !custom 1\n",
    "self: &s [*s]\n",
    "a: [1, 2\n",
    "a: 0b101\nb: -0\nc: 12345678901234567890\nd: '007'\n",
]


def typed(value: Any) -> Any:
    """The value with every type spelled out: True == 1 and 1 == 1.0 in Python."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return (type(value).__name__, [typed(item) for item in items])
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, value)


@pytest.mark.parametrize("text", TRICKY_YAML)
def test_the_fast_yaml_reader_reads_what_pyyaml_reads(text: str) -> None:
    try:
        expected = yaml.load(text, Loader=file_parse._Loader)
    except (yaml.YAMLError, RecursionError) as error:
        with pytest.raises(type(error)) as raised:
            file_parse.load_yaml(text)
        assert str(raised.value) == str(error)
        return
    got = file_parse.load_yaml(text)
    if expected is not None and "self:" in text:
        # Recursive: compare the shape PyYAML builds (a list that holds itself).
        assert got["self"][0] is got["self"]
        return
    assert typed(got) == typed(expected)


async def test_a_large_folder_with_bad_files_reaches_a_real_envoy(
    ingress_under_test: Ingress, backend_factory: Any
) -> None:
    backend: GreeterBackend = await backend_factory("greeter")
    folder = ingress_under_test.config.path
    write_folder(folder, FILES)
    # Real endpoints for a few Services spread over the chunks.
    for index in (0, 29, FILES - 1):
        documents = app_documents(index)
        documents[1] = endpoint_slice(f"svc-{index:03d}", backend.port)
        (folder / f"svc-{index:03d}.yaml").write_text(yaml.safe_dump_all(documents))

    await ingress_under_test.start()
    for index in (0, 29, FILES - 1):
        await routes_to(ingress_under_test, f"svc-{index:03d}.example.com", "greeter")


LINES = [
    "---",
    "--- {a: 1}",
    "--- # comment",
    "---\t",
    "----",
    "...",
    "... ",
    "...x",
    "# comment",
    "  # indented comment",
    "%YAML 1.2",
    "a: 1",
    "  b: [1, 2]",
    "",
    "   ",
    "\t",
    "- item",
    "text: '--- not a marker'",
    " ---",
]


def test_documents_split_from_the_whole_text_as_line_by_line() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        lines = [rng.choice(LINES) for _ in range(rng.randint(0, 12))]
        text = "\n".join(lines) + rng.choice(["", "\n", "\n\n"])
        expected = list(file_parse._split_documents_by_line(text))
        assert list(file_parse._split_documents_fast(text)) == expected, text
