"""Several requests on one HTTP/2 connection over TLS, each with its own :authority.

grpcio gives each channel its own connection and one :authority, so it cannot
show what a browser or grpc-go does when it coalesces hosts onto one
connection (RFC 7540 section 9.1.1). This speaks HTTP/2 itself (the `h2`
package) over one TLS socket, so a test knows every call shared that socket.

Blocking: run it with `asyncio.to_thread` when the backends live in the
test's event loop.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

from xds_ingress.demo.v1 import greeter_pb2

SAY_HELLO = "/xds_ingress.demo.v1.Greeter/SayHello"


@dataclass(frozen=True)
class Request:
    """A Greeter SayHello call, or with `grpc=False` a plain `GET /`."""

    authority: str
    grpc: bool = True


@dataclass
class Answer:
    """What one request on the connection got back."""

    authority: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset: bool = False

    @property
    def grpc_status(self) -> str | None:
        return self.trailers.get("grpc-status", self.headers.get("grpc-status"))

    @property
    def backend(self) -> str | None:
        """The Greeter backend that answered, from the reply message."""
        if self.grpc_status != "0" or len(self.body) < 5:
            return None
        _compressed, length = struct.unpack(">BI", self.body[:5])
        return str(greeter_pb2.HelloReply.FromString(self.body[5 : 5 + length]).backend)


@dataclass
class Connection:
    """One TLS connection's facts and the answers it carried."""

    peer_certificate: bytes  # DER
    alpn: str | None
    answers: list[Answer]


def requests_on_one_connection(
    address: tuple[str, int],
    *,
    server_name: str,
    ca_pem: bytes,
    requests: list[Request],
    timeout: float = 5.0,
) -> Connection:
    """One TLS connection (SNI `server_name`) carrying `requests`, all in flight at once."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(address, timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        peer = tls.getpeercert(binary_form=True)
        assert peer is not None
        alpn = tls.selected_alpn_protocol()
        connection = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        connection.initiate_connection()
        answers: dict[int, Answer] = {}
        message = greeter_pb2.HelloRequest(name="h2").SerializeToString()
        for request in requests:
            stream_id = connection.get_next_available_stream_id()
            answers[stream_id] = Answer(authority=request.authority)
            if not request.grpc:
                headers = [
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", request.authority),
                    (":path", "/"),
                ]
                connection.send_headers(stream_id, headers, end_stream=True)
                continue
            headers = [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", request.authority),
                (":path", SAY_HELLO),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
            connection.send_headers(stream_id, headers)
            connection.send_data(
                stream_id, struct.pack(">BI", 0, len(message)) + message, end_stream=True
            )
        tls.sendall(connection.data_to_send())
        _read_answers(tls, connection, answers)
        return Connection(
            peer_certificate=peer, alpn=alpn, answers=[answers[i] for i in sorted(answers)]
        )


def _read_answers(
    tls: ssl.SSLSocket, connection: h2.connection.H2Connection, answers: dict[int, Answer]
) -> None:
    open_streams = set(answers)
    while open_streams:
        data = tls.recv(65536)
        if not data:
            raise ConnectionError(f"connection closed with streams {sorted(open_streams)} open")
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id is not None:
                headers = {str(k): str(v) for k, v in event.headers or ()}
                answers[event.stream_id].status = int(headers.pop(":status"))
                answers[event.stream_id].headers = headers
            elif isinstance(event, h2.events.DataReceived) and event.stream_id is not None:
                answers[event.stream_id].body += event.data or b""
                connection.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
            elif isinstance(event, h2.events.TrailersReceived) and event.stream_id is not None:
                answers[event.stream_id].trailers = {str(k): str(v) for k, v in event.headers or ()}
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id is not None:
                open_streams.discard(event.stream_id)
            elif isinstance(event, h2.events.StreamReset) and event.stream_id is not None:
                answers[event.stream_id].reset = True
                open_streams.discard(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise ConnectionError(f"GOAWAY ({event.error_code}) with streams open")
        outgoing = connection.data_to_send()
        if outgoing:
            tls.sendall(outgoing)
