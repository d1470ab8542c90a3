"""Reading the file source's files into documents, on as many cores as the folder needs.

Pure functions of a path: no shared state, and no logging but for the
pool's own failure. Problems come back as
data (in file order, interleaved with the documents they sit between), so
that a worker process can do the parsing while the file source logs and
keeps the objects. That split is what lets a 10k-file folder be parsed on
every core: parsing is nearly all of a cold start's read, and a process pool
is the only way CPython parses on more than one core.

A folder of fewer than POOL_MIN_FILES changed files is read in the calling
process: starting workers costs more than it saves there.
"""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import json
import logging
import multiprocessing
import os
import re
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.reduction import ForkingPickler
from types import MappingProxyType
from typing import Any, NamedTuple

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from xds_ingress.sources.objects import freeze

log = logging.getLogger(__name__)

SUFFIXES = frozenset({".yaml", ".yml", ".json"})

# Below this many files to read, workers (a new interpreter each) cost more
# than they save: ~0.1 s to start, against ~0.3 ms to parse one small file.
POOL_MIN_FILES = 400
# Files per task: small enough that the caller turns the first results into
# objects while the workers parse the rest, large enough that the pickling
# round trip stays a small part of each task.
CHUNK_FILES = 250

# A line that starts or ends a YAML document. YAML forbids these at column 0
# inside any scalar, so splitting on them finds document boundaries exactly,
# which lets one malformed document be skipped while its neighbours load.
_DOCUMENT_MARKER = re.compile(r"^(?:---|\.\.\.)(?:[ \t]|$)")


# libyaml's parser reads a large folder about 6x faster than the pure-Python
# one (bench/README.md, cold start); PyYAML wheels ship it.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"

_IMPLICIT_RESOLVERS: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Loader(_SafeLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that leaves timestamps as strings, as Kubernetes reads them.

    Otherwise an unquoted creationTimestamp would become a datetime, a type
    no Kubernetes client ever produces and translate would have to special-case.

    libyaml asks Python for the tag of every node; PyYAML's answer (with no
    path resolvers, as here) is a function of the plain scalar's text alone,
    so it is memoised: mapping keys and common values repeat in every
    document, and the question was a third of the parse.
    """

    yaml_implicit_resolvers = _IMPLICIT_RESOLVERS

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return _plain_scalar_tag(value) if implicit[0] else _STR
        return _SEQ if kind is SequenceNode else _MAP

    # No path resolvers: PyYAML's own versions only check that there are none.
    def descend_resolver(self, current_node: Node | None, current_index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


@functools.lru_cache(maxsize=4096)
def _plain_scalar_tag(value: str) -> str:
    """BaseResolver.resolve for a plain scalar, with _Loader's resolvers."""
    resolvers = _IMPLICIT_RESOLVERS.get(value[0] if value else "", [])
    for tag, regexp in resolvers + _IMPLICIT_RESOLVERS.get(None, []):
        if regexp.match(value):
            return tag
    return _STR


class Document(NamedTuple):
    where: str  # "path: document 2 (line 9)", for log lines
    body: object


class Problem(NamedTuple):
    """A WARNING the file source logs: the file or document it names is skipped."""

    message: str


class Failure(NamedTuple):
    """A bug reading one file (not bad input): logged with its traceback, file skipped."""

    traceback: str


Item = Document | Problem | Failure


def is_config_file(name: str) -> bool:
    # Hidden entries are skipped: editors' temporary files, and the ..data /
    # ..2024_... directories of a ConfigMap volume, which would otherwise
    # show every object twice.
    return not name.startswith(".") and os.path.splitext(name)[1] in SUFFIXES


def read_many(paths: Sequence[str], *, workers: int) -> Iterator[tuple[str, tuple[Item, ...]]]:
    """(path, its items) for each of `paths`, in order, parsed on up to `workers` processes."""
    done = 0
    if workers >= 2 and len(paths) >= POOL_MIN_FILES:
        try:
            for result in _read_in_pool(paths, workers=workers):
                yield result
                done += 1
        except (BrokenProcessPool, OSError, RuntimeError, ImportError) as error:
            # No workers (a process limit, no working sem_open, a __main__
            # that starts the program again when imported, as
            # multiprocessing's spawn does), or a result too deeply nested to
            # send back: slower, not wrong. The rest is read here.
            first_line = (str(error).strip().splitlines() or [""])[0]
            log.warning(
                "parsing on %d processes failed (%s: %s); reading here instead",
                workers,
                type(error).__name__,
                first_line,
            )
    for path in paths[done:]:
        yield path, read_file(path)


def _read_in_pool(paths: Sequence[str], *, workers: int) -> Iterator[tuple[str, tuple[Item, ...]]]:
    chunks = [paths[start : start + CHUNK_FILES] for start in range(0, len(paths), CHUNK_FILES)]
    # spawn, not fork: the control plane has gRPC and asyncio threads, and a
    # forked child can inherit a lock one of them held. A spawned worker
    # imports this module, PyYAML and the program's __main__ (the CLI
    # imports lazily): about a tenth of a second.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)), mp_context=context
    ) as pool:
        for chunk, results in zip(chunks, pool.map(read_files, chunks), strict=True):
            yield from zip(chunk, results, strict=True)


def read_files(paths: Sequence[str]) -> list[tuple[Item, ...]]:
    """read_file of each path, documents frozen: one task of a worker process.

    Freezing every value of 30k objects (as KubeObject keeps them) was a
    second of the parent's time at a cold start, on top of the workers'.
    Built frozen here it costs the workers about 0.6 s of CPU between them,
    nearly all of it sending the read-only mappings back (see
    _reduce_proxy), and the parent nothing but unpickling them.
    """
    # Parsing allocates millions of objects and frees none in cycles; the
    # collector's passes over them cost a fifth of the parse for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return [read_file(path, frozen=True) for path in paths]
    finally:
        if enabled:
            gc.enable()


def _proxy(mapping: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(mapping)


def _reduce_proxy(
    proxy: MappingProxyType[str, Any],
) -> tuple[Callable[[dict[str, Any]], MappingProxyType[str, Any]], tuple[dict[str, Any]]]:
    # A mappingproxy cannot be pickled by name (builtins has none); sent as
    # its dict and wrapped again by the unpickler, in C, with no walk.
    return _proxy, (dict(proxy),)


# The pool sends results with multiprocessing's pickler; only it learns this.
ForkingPickler.register(MappingProxyType, _reduce_proxy)


def read_file(path: str, *, frozen: bool = False) -> tuple[Item, ...]:
    """The documents and problems of one file; `frozen`: documents as objects.freeze makes them."""
    try:
        return tuple(_read_file(path, frozen=frozen))
    except Exception:
        # A bug on one odd file must not stop the folder being watched.
        return (Failure(traceback.format_exc()),)


def _read_file(path: str, *, frozen: bool) -> Iterator[Item]:
    try:
        with open(path, "rb") as file:
            data = file.read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        yield Problem(f"{path}: cannot read file: {error}")
        return
    if "\r" in text:
        # What reading in text mode (universal newlines) did: line numbers
        # in messages count lines the way an editor does.
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    yield from _documents(path, text, frozen=frozen)


def _documents(path: str, text: str, *, frozen: bool) -> Iterator[Item]:
    if path.endswith(".json"):
        try:
            document = json.loads(text)
            yield Document(path, _frozen(document) if frozen else document)
        except (ValueError, RecursionError) as error:
            yield Problem(f"{path}: malformed JSON: {error}; file ignored")
        return
    for index, (first_line, chunk) in enumerate(_split_documents(text), start=1):
        where = f"{path}: document {index} (line {first_line})"
        try:
            document = load_yaml(chunk, frozen=frozen)
        except (yaml.YAMLError, RecursionError) as error:
            problem = _yaml_problem(error, first_line)
            yield Problem(f"{where}: malformed YAML: {problem}; document ignored")
            continue
        if document is not None:  # an empty document, as kubectl skips it
            yield Document(where, document)


def _split_documents(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each document that has content."""
    if _OTHER_LINE_BREAKS.search(text) is None:
        return _split_documents_fast(text)
    return _split_documents_by_line(text)


# What str.splitlines breaks on besides "\n" ("\r" is gone by now): with
# none of them, "\n" alone ends lines and the text can be searched whole.
_OTHER_LINE_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\r]")
_DOCUMENT_MARKERS = re.compile(r"^(?:---|\.\.\.)(?:[ \t]|$)", re.MULTILINE)
# A line with something on it other than a comment or a directive.
_CONTENT_LINE = re.compile(r"^\s*[^\s#%]", re.MULTILINE)


def _split_documents_fast(text: str) -> Iterator[tuple[int, str]]:
    """_split_documents_by_line's answer, from a few searches of the whole text."""
    first_line = 1
    start = 0  # where the current document's lines begin
    carried = ""  # content on the marker line that opened it
    line = 1  # the line number at `start`
    for marker in _DOCUMENT_MARKERS.finditer(text):
        at = marker.start()
        chunk = carried + text[start:at]
        if _CONTENT_LINE.search(chunk):
            yield first_line, chunk
        number = line + text.count("\n", start, at)
        end = text.find("\n", at)
        end = len(text) if end == -1 else end + 1
        # "--- {a: 1}": content on the marker line belongs to the new document.
        rest = text[at + 3 : end] if text.startswith("---", at) else ""
        carried = rest if rest.strip() else ""
        first_line = number if carried else number + 1
        start, line = end, number + 1
    chunk = carried + text[start:]
    if _CONTENT_LINE.search(chunk):
        yield first_line, chunk


def _split_documents_by_line(text: str) -> Iterator[tuple[int, str]]:
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


def load_yaml(text: str, *, frozen: bool = False) -> Any:
    """yaml.load(text, Loader=_Loader), with the same result, about twice as fast.

    PyYAML's constructor is pure Python even over libyaml, and costs more
    than libyaml's parse: a generator and several calls per node. Kubernetes
    YAML is plain maps, lists and scalars, so those are built here directly;
    anything else (anchors used twice, merge keys, non-string keys, explicit
    tags) goes to PyYAML's own constructor, which is the definition of right.

    `frozen`: the result as objects.freeze would make it (read-only
    mappings, tuples), built so rather than copied afterwards.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return _Constructor(loader, frozen=frozen).construct(node)
        except (_Unusual, yaml.YAMLError, RecursionError):
            pass  # PyYAML says exactly what is wrong, or builds what is unusual
    finally:
        loader.dispose()
    document = yaml.load(text, Loader=_Loader)
    return _frozen(document) if frozen else document


def _frozen(document: Any) -> Any:
    try:
        return freeze(document)
    except RecursionError:
        # Anchors that make a document contain itself: KubeObject fails to
        # freeze it again, and the file source says why.
        return document


_BOOL_VALUES = yaml.constructor.SafeConstructor.bool_values


class _Unusual(Exception):
    """A node this constructor leaves to PyYAML's."""


class _Constructor:
    def __init__(self, loader: yaml.SafeLoader, *, frozen: bool) -> None:
        self._loader = loader
        self._frozen = frozen
        # Collections seen: one seen twice is an alias, which PyYAML shares
        # (or makes recursive); leave that to it.
        self._seen: set[int] = set()

    def construct(self, node: Node) -> Any:
        kind = node.__class__
        tag = node.tag
        if kind is ScalarNode:
            value: str = node.value
            if tag == _STR:
                return value
            if tag == _INT and value.isdigit() and (value[0] != "0" or value == "0"):
                return int(value)  # plain decimal; PyYAML's reads 0o, 0x, 1_000, 1:30
            if tag == _BOOL:
                return _BOOL_VALUES[value.lower()]
            if tag == _NULL:
                return None
            return self._loader.construct_object(node, deep=True)
        seen = self._seen
        if id(node) in seen:
            raise _Unusual
        seen.add(id(node))
        if kind is MappingNode and tag == _MAP:
            mapping: dict[str, Any] = {}
            for key, value_node in node.value:
                if key.__class__ is not ScalarNode or key.tag != _STR:
                    raise _Unusual  # merge keys, numbers, nulls, collections as keys
                mapping[key.value] = self.construct(value_node)
            return MappingProxyType(mapping) if self._frozen else mapping
        if kind is SequenceNode and tag == _SEQ:
            items = [self.construct(item) for item in node.value]
            return tuple(items) if self._frozen else items
        raise _Unusual
