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

Parsing is file_parse's job; a large read (a cold start) runs it on every
core. A poll that finds nothing changed costs one stat per file, and the
interval stretches with that cost so that watching a huge folder stays a
small fraction of one core.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from xds_ingress import gc_pause
from xds_ingress.sources.file_parse import (
    Document,
    Failure,
    Item,
    Problem,
    is_config_file,
    read_many,
)
from xds_ingress.sources.objects import KubeObject, ObjectError, ObjectKey, parse_object
from xds_ingress.sources.sink import ObjectSink

log = logging.getLogger(__name__)

# A poll that changed nothing is followed by a sleep of at least this many
# times its own duration: watching stays under ~5% of a core however large
# the folder (10k files take ~0.05 s to stat).
POLL_COST_FACTOR = 20

# (mtime_ns, ctime_ns, size, inode): a file whose tuple is unchanged is not read again.
_Stat = tuple[int, int, int, int]


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
    `workers` caps the processes a large read parses on (default: the CPUs
    this process may use).
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        poll_interval: float = 0.25,
        workers: int | None = None,
        freeze_heap: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.poll_interval = poll_interval
        self.workers = workers if workers is not None else _usable_cpus()
        # gc.freeze() after the first read (see scan); process-wide, so a
        # caller that owns the process may turn it off.
        self._freeze_heap = freeze_heap
        # The first read, when started before `run` (start_first_read).
        self._first_read: concurrent.futures.Future[tuple[KubeObject, ...] | None] | None = None
        self.synced = asyncio.Event()
        self._files: dict[str, _FileState] = {}
        self._scanned = False
        self._directory_problem: str | None = None
        self._warned_duplicates: frozenset[tuple[ObjectKey, str, str]] = frozenset()
        # How long the last look at the folder's names and stats took.
        self._stat_seconds = 0.0

    @property
    def origin(self) -> str:
        return f"file:{self.directory}"

    async def run(self, sink: ObjectSink) -> None:
        """Publish the folder's objects to `sink` now and after every change.

        Runs until cancelled.
        """
        first_read, self._first_read = self._first_read, None
        while True:
            if first_read is not None:
                objects = await asyncio.wrap_future(first_read)
                first_read = None
            else:
                # Reading files blocks; keep it off the event loop.
                objects = await asyncio.to_thread(self.scan)
            if objects is not None:
                sink.replace_all(objects, origin=self.origin)
            if not self.synced.is_set():
                self.synced.set()
                log.info("read %d objects from %s", len(objects or ()), self.directory)
            await asyncio.sleep(max(self.poll_interval, self._stat_seconds * POLL_COST_FACTOR))

    def start_first_read(self) -> None:
        """Start the first read now, on a thread of its own; `run` publishes it.

        A cold start's read is most of its time and needs nothing but the
        folder: started before the program has loaded the rest of itself
        and opened its ports, the workers parse meanwhile.
        """
        if self._first_read is not None or self._scanned:
            return
        future: concurrent.futures.Future[tuple[KubeObject, ...] | None] = (
            concurrent.futures.Future()
        )

        def read() -> None:
            try:
                future.set_result(self.scan())
            except BaseException as error:  # handed to run(), which raises it
                future.set_exception(error)

        # A daemon: a program that fails to start must not wait for the read.
        threading.Thread(target=read, name="file-source-first-read", daemon=True).start()
        self._first_read = future

    def scan(self) -> tuple[KubeObject, ...] | None:
        """Poll once: the complete object set if anything changed, else None.

        The first call always returns the object set.
        """
        started = time.perf_counter()
        stats = self._stat_files()
        self._stat_seconds = time.perf_counter() - started
        changed = not self._scanned or stats.keys() != self._files.keys()
        files: dict[str, _FileState] = {}
        to_read: list[str] = []
        for path, stat in stats.items():
            known = self._files.get(path)
            if known is not None and known.stat == stat:
                files[path] = known
            else:
                to_read.append(path)
        if not to_read and not changed:
            self._files = files
            return None
        # Reading makes objects that stay (no garbage cycles); at 10k files
        # the collector's passes over them were most of the reading
        # thread's time. Those of the first read live as long as the
        # process: frozen, no pass walks them afterwards either.
        with gc_pause.paused(freeze=self._freeze_heap and not self._scanned):
            for path, items in read_many(to_read, workers=self.workers):
                files[path] = _FileState(stat=stats[path], objects=_located(path, items))
            self._files = files
            self._scanned = True
            return self._merge()

    def _stat_files(self) -> dict[str, _Stat]:
        problem = None
        stats: dict[str, _Stat] = {}
        if self.directory.is_file():
            _stat_into(stats, str(self.directory))  # one file is a folder of one
        elif self.directory.is_dir():
            _walk_into(stats, str(self.directory))
        else:
            problem = "does not exist"
        if problem != self._directory_problem and problem is not None:
            log.warning("%s: %s; no objects read from it", self.directory, problem)
        self._directory_problem = problem
        return stats

    def _merge(self) -> tuple[KubeObject, ...]:
        winners: dict[ObjectKey, _Located] = {}
        duplicates: set[tuple[ObjectKey, str, str]] = set()
        # By path components, as pathlib orders paths: the first file wins.
        for path in sorted(self._files, key=_components):
            for located in self._files[path].objects:
                first = winners.setdefault(located.obj.key, located)
                if first is not located:
                    duplicates.add((located.obj.key, first.where, located.where))
        for key, first_where, where in sorted(duplicates - self._warned_duplicates):
            log.warning("%s: %s is also defined in %s; ignored here", where, key, first_where)
        # Remember only current duplicates, so one that comes back is reported again.
        self._warned_duplicates = frozenset(duplicates)
        return tuple(located.obj for located in winners.values())


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _components(path: str) -> list[str]:
    return path.split(os.sep)


def _walk_into(stats: dict[str, _Stat], directory: str) -> None:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return  # removed or unreadable since it was listed; the next poll sees it
    for entry in entries:
        name = entry.name
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if is_dir:
            # Like os.walk: hidden folders (a ConfigMap volume's ..data and
            # ..2024_... copies) are skipped, and links to folders not followed.
            if not name.startswith(".") and not entry.is_symlink():
                _walk_into(stats, entry.path)
        elif is_config_file(name):
            _stat_into(stats, entry.path)


def _stat_into(stats: dict[str, _Stat], path: str) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return  # removed between listing and stat; the next poll sees it gone
    stats[path] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _located(path: str, items: tuple[Item, ...]) -> tuple[_Located, ...]:
    """The objects of one file's documents; its problems logged, in file order."""
    found: list[_Located] = []
    for item in items:
        if isinstance(item, Document):
            found.extend(_objects(item.where, item.body, source=path))
        elif isinstance(item, Problem):
            log.warning("%s", item.message)
        elif isinstance(item, Failure):
            # The file counts as read, so this is logged once, not on every poll.
            log.error("%s: reading failed; file ignored\n%s", path, item.traceback.rstrip())
    return tuple(found)


def _objects(where: str, document: object, *, source: str) -> Iterator[_Located]:
    if isinstance(document, Mapping) and document.get("kind") == "List":
        items = document.get("items")
        # A tuple when a worker process froze the document (file_parse).
        if not isinstance(items, list | tuple):
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
