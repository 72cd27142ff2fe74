"""The one HTTP request a delivery attempt makes: a POST to an address that
was checked, never a redirect followed.

A small client of its own, rather than a library's, because the checks must
hold at the connection: the host is resolved here, every address it
resolves to is checked (server.domain.webhooks), and the connection goes to
one of those very addresses, so a name that changes what it resolves to
between the check and the connection cannot lead it elsewhere. Only the
status line of the reply is read: a 3xx is just a failed attempt.
"""

import asyncio
import socket
import ssl
from collections.abc import Mapping
from contextlib import suppress
from urllib.parse import urlsplit

from server.domain.webhooks import check_addresses

# A status line longer than this is no HTTP reply.
MAX_STATUS_LINE_BYTES = 1024


class SendFailed(Exception):
    """The attempt got no reply: why, for the delivery log."""


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (an IP literal: itself)."""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise SendFailed(f"cannot resolve {host}: {error}") from None
    return [str(sockaddr[0]) for *_, sockaddr in found]


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


async def post(
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    timeout_seconds: float,
    allow_private: bool,
) -> int:
    """POSTs `body` to `url` and returns the reply's status code; raises
    SendFailed when there is none in time, InvalidArgument (naming `url`)
    when the host resolves to a refused address."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = port_of(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    request = "\r\n".join(lines).encode("latin-1") + body
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    try:
        async with asyncio.timeout(timeout_seconds):
            addresses = check_addresses(await resolve(host, port), allow_private=allow_private)
            reader, writer = await _connect(addresses, port, tls, host)
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readuntil(b"\n")
            finally:
                writer.close()
                with suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except TimeoutError:
        raise SendFailed(f"no reply within {timeout_seconds:g} s") from None
    except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, ValueError):
        raise SendFailed("the reply was no HTTP response") from None
    except (OSError, ssl.SSLError) as error:
        raise SendFailed(f"connection failed: {error}") from None
    return _status_code(status_line)


async def _connect(
    addresses: list[str], port: int, tls: ssl.SSLContext | None, host: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the first of `addresses` that accepts one."""
    error: OSError | None = None
    for address in addresses:
        try:
            return await asyncio.open_connection(
                address,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
                limit=MAX_STATUS_LINE_BYTES,
            )
        except OSError as failed:
            error = failed
    assert error is not None  # check_addresses returned at least one address
    raise error


def _status_code(status_line: bytes) -> int:
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise SendFailed("the reply was no HTTP response")
    return int(parts[1])
