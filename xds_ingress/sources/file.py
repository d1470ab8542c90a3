"""A source that watches a folder of Kubernetes YAML, for running without a cluster.

The folder holds what a user would `kubectl apply`: *.yaml, *.yml and *.json
files, anywhere below it, with several documents per file and `kind: List`
wrappers. It is polled (names, sizes, mtimes) rather than watched with
inotify, so it needs no extra dependency and works the same on every OS and
on network and ConfigMap mounts. A poll that sees a change re-reads only the
changed files and then publishes the complete object set to the sink.

Bad input never stops the flow: each problem (unreadable file, malformed
YAML, a document that is not an object, an unsupported kind) is one WARNING
naming the file and the document, and everything else keeps flowing. A file
is only read again when it changes, so an unfixed problem is not logged on
every poll.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from xds_ingress.sources.objects import KubeObject, ObjectError, ObjectKey, parse_object
from xds_ingress.sources.sink import ObjectSink

log = logging.getLogger(__name__)

SUFFIXES = frozenset({".yaml", ".yml", ".json"})

# A line that starts or ends a YAML document. YAML forbids these at column 0
# inside any scalar, so splitting on them finds document boundaries exactly,
# which lets one malformed document be skipped while its neighbours load.
_DOCUMENT_MARKER = re.compile(r"^(?:---|\.\.\.)(?:[ \t]|$)")


# libyaml's parser reads a large folder about 6x faster than the pure-Python
# one (bench/README.md, cold start); PyYAML wheels ship it.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that leaves timestamps as strings, as Kubernetes reads them.

    Otherwise an unquoted creationTimestamp would become a datetime, a type
    no Kubernetes client ever produces and translate would have to special-case.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Stat:
    mtime_ns: int
    ctime_ns: int
    size: int
    inode: int


@dataclass(frozen=True, slots=True)
class _Located:
    obj: KubeObject
    where: str  # "path: document 2" for log lines


@dataclass(frozen=True, slots=True)
class _FileState:
    stat: _Stat
    objects: tuple[_Located, ...]


class FileSource:
    """Watches `directory` (or a single file) and feeds its objects to a sink.

    `synced` is set once the first complete read has been published: the
    startup barrier. Not thread-safe; run one `run` (or `scan` caller) at a time.
    """

    def __init__(self, directory: Path | str, *, poll_interval: float = 0.25) -> None:
        self.directory = Path(directory)
        self.poll_interval = poll_interval
        self.synced = asyncio.Event()
        self._files: dict[Path, _FileState] = {}
        self._scanned = False
        self._directory_problem: str | None = None
        self._warned_duplicates: frozenset[tuple[ObjectKey, str, str]] = frozenset()

    @property
    def origin(self) -> str:
        return f"file:{self.directory}"

    async def run(self, sink: ObjectSink) -> None:
        """Publish the folder's objects to `sink` now and after every change.

        Runs until cancelled.
        """
        while True:
            # Reading files blocks; keep it off the event loop.
            objects = await asyncio.to_thread(self.scan)
            if objects is not None:
                sink.replace_all(objects, origin=self.origin)
            if not self.synced.is_set():
                self.synced.set()
                log.info("read %d objects from %s", len(objects or ()), self.directory)
            await asyncio.sleep(self.poll_interval)

    def scan(self) -> tuple[KubeObject, ...] | None:
        """Poll once: the complete object set if anything changed, else None.

        The first call always returns the object set.
        """
        stats = self._stat_files()
        changed = not self._scanned or stats.keys() != self._files.keys()
        files: dict[Path, _FileState] = {}
        for path, stat in stats.items():
            known = self._files.get(path)
            if known is not None and known.stat == stat:
                files[path] = known
                continue
            changed = True
            files[path] = _FileState(stat=stat, objects=_read_objects(path))
        self._files = files
        self._scanned = True
        if not changed:
            return None
        return self._merge()

    def _stat_files(self) -> dict[Path, _Stat]:
        problem = None
        stats: dict[Path, _Stat] = {}
        if self.directory.is_file():
            paths: Iterable[Path] = [self.directory]  # one file is a folder of one
        elif self.directory.is_dir():
            paths = _walk(self.directory)
        else:
            paths = []
            problem = "does not exist"
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue  # removed between listing and stat; the next poll sees it gone
            stats[path] = _Stat(
                mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, size=st.st_size, inode=st.st_ino
            )
        if problem != self._directory_problem and problem is not None:
            log.warning("%s: %s; no objects read from it", self.directory, problem)
        self._directory_problem = problem
        return stats

    def _merge(self) -> tuple[KubeObject, ...]:
        winners: dict[ObjectKey, _Located] = {}
        duplicates: set[tuple[ObjectKey, str, str]] = set()
        for path in sorted(self._files):
            for located in self._files[path].objects:
                first = winners.setdefault(located.obj.key, located)
                if first is not located:
                    duplicates.add((located.obj.key, first.where, located.where))
        for key, first_where, where in sorted(duplicates - self._warned_duplicates):
            log.warning("%s: %s is also defined in %s; ignored here", where, key, first_where)
        # Remember only current duplicates, so one that comes back is reported again.
        self._warned_duplicates = frozenset(duplicates)
        return tuple(located.obj for located in winners.values())


def _walk(directory: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(directory):
        # Skip hidden entries: editors' temporary files, and the ..data /
        # ..2024_... directories of a ConfigMap volume, which would otherwise
        # show every object twice.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root, name)
            if not name.startswith(".") and path.suffix in SUFFIXES:
                yield path


def _read_objects(path: Path) -> tuple[_Located, ...]:
    try:
        return tuple(_read_file(path))
    except Exception:
        # A bug on one odd file must not stop the folder being watched. The
        # file counts as read, so this is logged once, not on every poll.
        log.exception("%s: reading failed; file ignored", path)
        return ()


def _read_file(path: Path) -> Iterator[_Located]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        log.warning("%s: cannot read file: %s", path, error)
        return
    for where, document in _documents(path, text):
        yield from _objects(where, document, source=str(path))


def _documents(path: Path, text: str) -> Iterator[tuple[str, object]]:
    if path.suffix == ".json":
        try:
            yield f"{path}", json.loads(text)
        except (ValueError, RecursionError) as error:
            log.warning("%s: malformed JSON: %s; file ignored", path, error)
        return
    for index, (first_line, chunk) in enumerate(_split_documents(text), start=1):
        where = f"{path}: document {index} (line {first_line})"
        try:
            document = yaml.load(chunk, Loader=_Loader)
        except (yaml.YAMLError, RecursionError) as error:
            problem = _yaml_problem(error, first_line)
            log.warning("%s: malformed YAML: %s; document ignored", where, problem)
            continue
        if document is not None:  # an empty document, as kubectl skips it
            yield where, document


def _split_documents(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each document that has content."""
    first_line = 1
    current: list[str] = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if not _DOCUMENT_MARKER.match(line):
            current.append(line)
            continue
        if _has_content(current):
            yield first_line, "".join(current)
        # "--- {a: 1}": content on the marker line belongs to the new document.
        rest = line[3:] if line.startswith("---") else ""
        current = [rest] if rest.strip() else []
        first_line = number if current else number + 1
    if _has_content(current):
        yield first_line, "".join(current)


def _has_content(lines: Sequence[str]) -> bool:
    return any(line.strip() and not line.lstrip().startswith(("#", "%")) for line in lines)


def _yaml_problem(error: Exception, first_line: int) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} at line {first_line + mark.line}, column {mark.column + 1}"
    return str(error)


def _objects(where: str, document: object, *, source: str) -> Iterator[_Located]:
    if isinstance(document, Mapping) and document.get("kind") == "List":
        items = document.get("items")
        if not isinstance(items, list):
            log.warning("%s: List has no items list; ignored", where)
            return
        for index, item in enumerate(items, start=1):
            yield from _objects_one(f"{where} item {index}", item, source=source)
        return
    yield from _objects_one(where, document, source=source)


def _objects_one(where: str, document: object, *, source: str) -> Iterator[_Located]:
    try:
        obj = parse_object(document, source=source)
    except ObjectError as error:
        log.warning("%s: %s; ignored", where, error)
        return
    yield _Located(obj=obj, where=where)
