"""A bare HTTP/2 client over a socket, for what grpc and httpx clients hide:
a client that stops reading (it grants no flow-control window, and its
socket's receive buffer is small), and the frames a server sends, such as
its SETTINGS.

Requests are sent with HPACK literals only (no Huffman coding, no table);
the frames received are returned raw, not decoded.
"""

import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x7, 0x8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE = 0x3, 0x4
# The first stream a client opens.
STREAM = 1


@dataclass(frozen=True)
class Frame:
    kind: int
    flags: int
    stream: int
    payload: bytes

    def settings(self) -> dict[int, int]:
        """A SETTINGS frame's parameters, by identifier."""
        assert self.kind == SETTINGS
        return {
            identifier: value
            for identifier, value in struct.iter_unpack(">HI", self.payload)  # six bytes each
        }


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def _integer(value: int, prefix_bits: int) -> bytes:
    """HPACK's integer representation (RFC 7541, 5.1), with no flag bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    encoded = [limit]
    value -= limit
    while value >= 128:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def _literal(name: str, value: str) -> bytes:
    """A header as a literal without indexing, with a new name (RFC 7541, 6.2.2)."""
    raw_name, raw_value = name.encode(), value.encode()
    return b"\x00" + _integer(len(raw_name), 7) + raw_name + _integer(len(raw_value), 7) + raw_value


def grpc_call(
    address: tuple[str, int],
    path: str,
    message: bytes,
    metadata: Sequence[tuple[str, str]] = (),
    *,
    window: int = 65535,
    receive_buffer: int = 4096,
) -> socket.socket:
    """A connection with one gRPC call sent on it (stream 1): `message` as the
    request, the client offering `window` bytes of flow control and no more
    unless the caller grants it (`grant`)."""
    sock = socket.create_connection(address, timeout=30)
    # Set before the connection carries data, so that the kernel does not
    # buffer much for a client that does not read.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    host, port = address
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", f"{host}:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *metadata,
    ]
    block = b"".join(_literal(name, value) for name, value in headers)
    body = b"\x00" + struct.pack(">I", len(message)) + message
    sock.sendall(
        PREFACE
        + frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, window))
        # Whatever the server's settings, they are acknowledged.
        + frame(SETTINGS, ACK, 0)
        + frame(HEADERS, END_HEADERS, STREAM, block)
        + frame(DATA, END_STREAM, STREAM, body)
    )
    return sock


def grant(sock: socket.socket, size: int) -> None:
    """Gives the server `size` more bytes to send, on the stream and the connection."""
    increment = struct.pack(">I", size)
    sock.sendall(frame(WINDOW_UPDATE, 0, STREAM, increment) + frame(WINDOW_UPDATE, 0, 0, increment))


def frames(sock: socket.socket) -> Iterator[Frame]:
    """The frames the server sends, until it closes the connection."""
    buffered = b""

    def fill(size: int) -> bool:
        nonlocal buffered
        while len(buffered) < size:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            buffered += chunk
        return True

    while fill(9):
        length = int.from_bytes(buffered[:3], "big")
        if not fill(9 + length):
            return
        stream = int.from_bytes(buffered[5:9], "big") & 0x7FFFFFFF
        yield Frame(buffered[3], buffered[4], stream, buffered[9 : 9 + length])
        buffered = buffered[9 + length :]


def response_headers(incoming: Iterator[Frame]) -> Frame:
    """The call's first HEADERS frame (its trailers alone if it was refused
    at once), the frames before it skipped."""
    return next(frame for frame in incoming if frame.stream == STREAM and frame.kind == HEADERS)


def response(incoming: Iterator[Frame]) -> tuple[bytes, bytes]:
    """The rest of the call's DATA, and its trailers' header block (b"" if
    the stream ended otherwise), read until the call ends."""
    data = b""
    for received in incoming:
        if received.stream != STREAM:
            continue
        if received.kind == DATA:
            data += received.payload
        if received.kind == RST_STREAM:
            break
        if received.kind == HEADERS and received.flags & END_STREAM:
            return data, received.payload
    return data, b""
