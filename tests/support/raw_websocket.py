"""A bare WebSocket client on a plain socket, for what a library client will not do: stop reading while it keeps
sending (a library reads in the background and answers pings), or watch the connection without draining it."""

from __future__ import annotations

import base64
import os
import select
import socket
import struct
import time

TEXT, BINARY, CLOSE, PING = 0x1, 0x2, 0x8, 0x9
TCP_ESTABLISHED = 1  # tcpi_state, the first byte of TCP_INFO (Linux)


def open_websocket(port: int, path: str, small_buffers: bool = False) -> socket.socket:
    """The handshake, then the socket (the server's first message, if any, is left unread).

    `small_buffers`: a client that does not read fills up after a few kB, not megabytes. On loopback the server's
    send buffer grows with the segment size (64 kB there) to about a megabyte, 10,000 score messages; a small
    receive buffer and a small maximum segment (announced in the handshake) keep both sides' buffers small, as
    a slow client across a real network would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small_buffers:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)  # one at a time: nothing past the handshake is consumed
        if not byte:
            raise ConnectionError(f"closed during the handshake: {head!r}")
        head += byte
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head.decode(errors='replace')}")
    return sock


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 2**16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def send_until_blocked(sock: socket.socket, message: bytes, blocked_s: float, bound_s: float) -> int:
    """Send `message` again and again without reading until the socket takes nothing for `blocked_s` (the server
    stopped reading); -> the messages sent whole. Raises when bound_s passes first."""
    sock.setblocking(False)
    sent = 0
    pending = memoryview(message)
    started = time.monotonic()
    while time.monotonic() - started < bound_s:
        _, writable, _ = select.select([], [sock], [], blocked_s)
        if not writable:
            return sent
        pending = pending[sock.send(pending):]
        if not pending:
            sent += 1
            pending = memoryview(message)
    raise AssertionError(f"the server was still reading after {bound_s} s ({sent} messages)")


def dropped_within(sock: socket.socket, bound_s: float) -> float | None:
    """Seconds until the server ends the connection (a reset or its FIN), watched without reading what it sent:
    the socket's TCP state leaves ESTABLISHED (reading would make room, and data still queued hides a reset
    from recv). None if it is still established after bound_s; polled every 0.1 s."""
    started = time.monotonic()
    while time.monotonic() - started < bound_s:
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_ESTABLISHED:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def read_frames(sock: socket.socket, bound_s: float) -> list[tuple[int, bytes]]:
    """Every frame the server sends until it closes (or bound_s): [(opcode, payload)]."""
    sock.setblocking(True)
    sock.settimeout(bound_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    frames = []
    while len(data) >= 2:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if size == 126:
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        frames.append((opcode, data[offset:offset + size]))
        data = data[offset + size:]
    return frames
