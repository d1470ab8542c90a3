"""Blocking calls to the Kubernetes API: paged lists and watch streams, as plain JSON.

Everything here blocks and runs on worker threads, never on the event loop.
Responses are read raw and decoded with `json`, not through the generated
model classes: that is several times faster, and it keeps field names as
the API (and kubectl, and our YAML files) spell them, which is what
`sources.objects` and translate expect.

Every failure comes out as an ApiError: an error status from the server, an
ERROR event in a watch, or a transport problem (status 0), so the watch loop
has one thing to catch. A 410 (the resourceVersion we asked for is older
than the server keeps) is ResourceExpired, which means "list again".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from xds_ingress.sources.kube_kinds import WatchedKind

CONNECT_TIMEOUT_SECONDS = 10.0
# Slack on top of a watch's server-side timeout before we call the
# connection dead: the server ends a healthy watch itself, so a read that
# waits longer than this is a connection nobody will ever write to again.
WATCH_READ_SLACK_SECONDS = 30.0
# Far above the API server's object size limit (about 1.5 MiB in etcd); a
# longer line is a broken stream, not an object.
MAX_EVENT_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 256 * 1024


class ApiError(Exception):
    """The API server refused a request, or could not be reached (status 0)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class ResourceExpired(ApiError):
    """410 Gone: the resourceVersion is too old to watch from; list again."""


@dataclass(frozen=True, slots=True)
class Listed:
    items: tuple[dict[str, Any], ...]
    resource_version: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED or BOOKMARK
    object: dict[str, Any]


class KubeApi:
    """Lists and watches any WatchedKind through one shared ApiClient (thread-safe)."""

    def __init__(
        self,
        client: ApiClient,
        *,
        request_timeout_seconds: float = 30.0,
        page_size: int = 500,
        max_pages: int = 10_000,
    ) -> None:
        self._client = client
        self._request_timeout = request_timeout_seconds
        self._page_size = page_size
        self._max_pages = max_pages

    def list_all(self, kind: WatchedKind, *, namespace: str | None) -> Listed:
        """Every object of `kind`, read in pages from one consistent snapshot.

        List items carry no apiVersion and kind; they are filled in here so
        that an item looks the same as a watched object.
        """
        items: list[dict[str, Any]] = []
        token = ""
        for _ in range(self._max_pages):
            query = [("limit", str(self._page_size))]
            if kind.field_selector:
                query.append(("fieldSelector", kind.field_selector))
            if token:
                query.append(("continue", token))
            data = self._get(kind.path(namespace=namespace), query)
            document = _decode(data, what=f"{kind.kind} list")
            metadata = _mapping(document.get("metadata"))
            for item in document.get("items") or ():
                if isinstance(item, dict):
                    items.append({"apiVersion": kind.api_version, "kind": kind.kind, **item})
            token = str(metadata.get("continue") or "")
            if not token:
                return Listed(
                    items=tuple(items), resource_version=str(metadata.get("resourceVersion", ""))
                )
        raise ApiError(f"{kind.kind} list has more than {self._max_pages} pages")

    def watch(
        self,
        kind: WatchedKind,
        *,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int,
    ) -> WatchStream:
        """Open a watch of `kind` from `resource_version`, with bookmarks.

        The server ends it after `timeout_seconds`; the caller then watches
        again from the last resourceVersion it saw.
        """
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if kind.field_selector:
            query.append(("fieldSelector", kind.field_selector))
        response = self._open(
            kind.path(namespace=namespace), query, timeout_seconds + WATCH_READ_SLACK_SECONDS
        )
        return WatchStream(response, what=f"{kind.kind} watch")

    def _get(self, path: str, query: list[tuple[str, str]]) -> bytes:
        response = self._open(path, query, self._request_timeout)
        try:
            with _transport_errors():
                data: bytes = response.data
            return data
        finally:
            response.release_conn()

    def _open(
        self, path: str, query: list[tuple[str, str]], read_timeout: float
    ) -> urllib3.BaseHTTPResponse:
        with _transport_errors():
            method, url, headers, _body, _post = self._client.param_serialize(
                method="GET",
                resource_path=path,
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            reply = self._client.call_api(
                method,
                url,
                header_params=headers,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, read_timeout),
            )
            response: urllib3.BaseHTTPResponse = reply.response
            if response.status == 200:
                return response
            body = response.data
            response.release_conn()
        raise _status_error(_decode_status(body), http_status=response.status)


class WatchStream:
    """The events of one watch, one JSON document per line.

    `read` is called from one worker thread at a time; `stop` may be called
    from any thread, and makes a blocked `read` return None at once.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, *, what: str) -> None:
        self._response = response
        self._what = what
        self._buffer = bytearray()
        self._stopped = threading.Event()
        self._closed = False

    def read(self) -> list[WatchEvent] | None:
        """The events that have arrived (at least one), or None when the watch ended.

        Blocks until then. Raises ResourceExpired or ApiError for an ERROR
        event or a broken connection.
        """
        while b"\n" not in self._buffer:
            if self._stopped.is_set():
                self.close()
                return None
            if len(self._buffer) > MAX_EVENT_BYTES:
                self.close()
                raise ApiError(f"{self._what}: an event longer than {MAX_EVENT_BYTES} bytes")
            try:
                with _transport_errors():
                    chunk = self._response.read1(_READ_CHUNK)
            except ApiError:
                self.close()
                if self._stopped.is_set():
                    return None  # our own stop() broke the read
                raise
            if not chunk:
                self.close()
                return None
            self._buffer += chunk
        complete, _, rest = bytes(self._buffer).rpartition(b"\n")
        self._buffer = bytearray(rest)
        events = []
        for line in complete.split(b"\n"):
            if line.strip():
                events.append(self._event(line))
        return events

    def _event(self, line: bytes) -> WatchEvent:
        document = _decode(line, what=self._what)
        kind = document.get("type")
        body = document.get("object")
        if not isinstance(kind, str) or not isinstance(body, dict):
            raise ApiError(f"{self._what}: an event without type or object")
        if kind == "ERROR":
            self.close()
            raise _status_error(body, http_status=0)
        return WatchEvent(type=kind, object=body)

    def stop(self) -> None:
        """End the watch from another thread: a blocked `read` returns None."""
        self._stopped.set()
        # Shutting the socket down (not closing it) is what wakes a thread
        # blocked in recv(); the reading thread closes it afterwards.
        try:
            self._response.shutdown()
        except (ValueError, RuntimeError, OSError):
            pass  # not connected (any more): nothing is blocked on it

    def close(self) -> None:
        """Release the connection; call from the reading thread, or when nobody reads."""
        if not self._closed:
            self._closed = True
            # Never back to the pool: a half-read stream is not reusable.
            self._response.close()


@contextmanager
def _transport_errors() -> Iterator[None]:
    try:
        yield
    except ApiException as error:
        # The client raises this itself only for transport failures (TLS).
        raise ApiError(f"cannot reach the API server: {error.reason}") from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ApiError(f"cannot reach the API server: {error}") from error


def _decode(data: bytes, *, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise ApiError(f"{what}: malformed JSON from the API server: {error}") from None
    if not isinstance(document, dict):
        raise ApiError(f"{what}: expected a JSON object from the API server")
    return document


def _decode_status(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def _status_error(status: Mapping[str, Any], *, http_status: int) -> ApiError:
    """An ApiError from a metav1.Status body (or an empty one)."""
    code = status.get("code")
    code = code if isinstance(code, int) else http_status
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or f"HTTP {code}")
    error_type = ResourceExpired if code == 410 else ApiError
    return error_type(f"{code} {reason}: {message}".strip(), status=code, reason=reason)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
