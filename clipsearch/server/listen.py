"""Listening: bind the socket first, so a busy port is known before anything is announced
(or a model loaded), then run uvicorn on that socket.

    >>> sock = bind("127.0.0.1", 8000)     # doctest: +SKIP  (BindError if it cannot)
    >>> run(app, sock)                     # doctest: +SKIP  (until Ctrl-C)
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from clipsearch.errors import BindError, MissingDependencyError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (IPv4 or IPv6, whatever ``host`` is).

    Raises BindError, whose message says what to do, when the address cannot be used.
    """
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise BindError(f"cannot listen on {where}: unknown host ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart right after a stop
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # and IPv4 too
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise BindError(_reason(e, where, port)) from None
    sock.set_inheritable(True)
    return sock


def _reason(e: OSError, where: str, port: int) -> str:
    if e.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the address is already in use (another server, or "
            "another `clipsearch serve`?). Stop it, or pick another --port."
        )
    if e.errno in (errno.EACCES, errno.EPERM):
        hint = " (ports below 1024 need privileges: use 8000 or above)" if port < 1024 else ""
        return f"cannot listen on {where}: permission denied{hint}."
    if e.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: that address is not one of this machine's. Use "
            "127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."
        )
    return f"cannot listen on {where}: {(e.strerror or str(e)).lower()}"


def run(app: Any, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve ``app`` on ``sock`` with uvicorn until interrupted. No access log (URLs may
    carry ``?token=``), no Server header, no proxy headers trusted."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("uvicorn", "server") from None
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
