"""``clipsearch serve``: the HTTP API and the web page (uvicorn). Thin: bind the port, open
the library, build the app (`clipsearch.server.create_app`, which loads the model in the
background: the port answers at once), announce the server in the library's discovery file
(so `clipsearch search` hands its queries over), run it."""

from __future__ import annotations

import os
import secrets
from typing import Annotated

import typer

from clipsearch.cli import options
from clipsearch.errors import MissingDependencyError, UsageError
from clipsearch.server import discovery


def serve(
    library: options.LibraryOpt = None,
    model: options.ModelOpt = None,
    precision: options.PrecisionOpt = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Anything but loopback exposes your library: use --token.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on.", min=1, max=65535)
    ] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="CLIPSEARCH_TOKEN",
            help="Require this token on every request (or env CLIPSEARCH_TOKEN). "
            "'auto' generates one. The printed URL carries it.",
            show_default=False,
        ),
    ] = None,
    max_upload_mb: Annotated[
        float,
        typer.Option(
            "--max-upload-mb", help="Largest image upload for search-by-example, in MiB.", min=0.1
        ),
    ] = 20.0,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in a web browser.")
    ] = False,
) -> None:
    """Serve the library in your browser: search as you type, search by example, play videos
    from their best moment, watch indexing progress."""
    from rich.markup import escape

    from clipsearch.cli import render
    from clipsearch.server.security import LOOPBACK_HOSTS, is_loopback

    try:
        import uvicorn  # noqa: F401 - the [server] extra's check, before anything starts
    except ImportError:
        raise MissingDependencyError("uvicorn", "server") from None
    from clipsearch.cli import terminal
    from clipsearch.server import create_app, listen

    if token == "auto":
        token = secrets.token_urlsafe(24)
    if token is not None and len(token) < 8:
        raise UsageError("--token must be at least 8 characters (or 'auto' to generate one)")
    loopback = is_loopback(host)
    # Bind first: a busy port is reported (BindError, exit 5) before the model loads.
    with listen.bind(host, port) as sock, options.open_library(library, model, precision) as lib:
        render.err.print(f"Library [bold]{lib.path}[/] · model {lib.model_spec} (loading)")
        local_token = token or secrets.token_urlsafe(24)
        if not loopback and token is None:
            render.err.print(
                f"[yellow]Warning:[/] listening on {escape(host)} without --token: anyone who can reach "
                "this machine can search and view your library. Indexing new folders from the "
                "page is disabled."
            )
        app = create_app(
            lib,
            token=token,
            max_upload_bytes=int(max_upload_mb * 2**20),
            # Loopback: only loopback Host headers (DNS rebinding); exposed: any (with a token).
            allowed_hosts=(*LOOPBACK_HOSTS, host) if loopback else None,
            allow_new_roots=loopback or token is not None,
            load_in_background=True,
            local_token=local_token,
            render_search=terminal.search_output,  # `search` prints what this renders
        )
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"
        if token:
            url += f"?token={token}"
        # soft_wrap: the URL stays on one line, whatever the terminal's width
        render.err.print(f"Serving on [bold]{escape(url)}[/]  (Ctrl-C to stop)", soft_wrap=True)
        if open_browser:
            import threading
            import webbrowser

            threading.Timer(1.0, webbrowser.open, args=(url,)).start()
        announced = _announce(lib, sock, host, local_token, model, precision)
        try:
            listen.run(app, sock, log_level=os.environ.get("CLIPSEARCH_LOG_LEVEL", "warning"))
        finally:
            if announced:
                discovery.withdraw(lib.path)


def _announce(lib, sock, host: str, token: str, model: str | None, precision: str | None) -> bool:
    """Write the library's discovery file; False (and a warning) when it cannot be written."""
    from clipsearch.cli import render

    connect = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    announcement = discovery.ServerAnnouncement(
        pid=os.getpid(),
        host=connect,
        port=int(sock.getsockname()[1]),
        token=token,
        model=options.model_spec(model),
        precision=options.precision_of(precision),
    )
    try:
        discovery.announce(lib.path, announcement)
    except OSError as e:
        render.err.print(
            f"[yellow]Warning:[/] cannot write {discovery.path_for(lib.path)} ({e.strerror}): "
            "`clipsearch search` will not use this server."
        )
        return False
    return True
