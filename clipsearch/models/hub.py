"""Is the Hugging Face hub reachable? Asked once, quickly, before weights are fetched.

huggingface_hub retries a failed metadata request with backoff (1, 2, 4, 8, 8 s) when the
connection fails and nothing is cached, and open_clip asks for two file names: offline,
a pretrained tag spent over a minute printing "Retrying in ..." before the error. A TCP
connection to the hub's endpoint (``HF_ENDPOINT``, or the proxy the environment names for
it) settles the question in at most ``PROBE_TIMEOUT_S``; when it fails, the download runs
in huggingface_hub's offline mode, which serves a cached copy if there is one and
otherwise fails at once, without retries.

A hub that answers but misbehaves (5xx, rate limits) is not "unreachable": there the
retries are huggingface_hub's own and worth waiting for.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 3.0


def unreachable_reason(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the hub (or its proxy) accepts a TCP connection within ``timeout`` s;
    else a short reason such as "cannot reach huggingface.co:443 (connection refused)".
    Offline mode set by the user (``HF_HUB_OFFLINE``) counts as unreachable."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    endpoint = urlsplit(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    proxy = _proxy_for(endpoint.scheme or "https", host)
    if proxy is not None:
        host, port = proxy
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append((getattr(e, "strerror", None) or str(e) or type(e).__name__).lower())

    # In a thread: name resolution has no timeout of its own and may hang when offline.
    probe = threading.Thread(target=connect, daemon=True, name="hub-probe")
    probe.start()
    probe.join(timeout + 0.5)
    where = f"{host}:{port}" + (" (the proxy)" if proxy is not None else "")
    if not outcome:
        return f"cannot reach {where} (no answer within {timeout:.0f} s)"
    return None if outcome[0] is None else f"cannot reach {where} ({outcome[0]})"


@contextmanager
def offline_if_unreachable() -> Iterator[str | None]:
    """Run the body in huggingface_hub's offline mode (the local cache only, no retries)
    when the hub is unreachable; yields the reason, or None when it is reachable."""
    from huggingface_hub import constants

    reason = unreachable_reason()
    if reason is None or constants.HF_HUB_OFFLINE:
        yield reason
        return
    constants.HF_HUB_OFFLINE = True  # read on every request (constants.is_offline_mode)
    try:
        yield reason
    finally:
        constants.HF_HUB_OFFLINE = False


def _proxy_for(scheme: str, host: str) -> tuple[str, int] | None:
    """(host, port) of the proxy the environment names for ``scheme`` requests to
    ``host``, or None (no proxy, or ``host`` is in NO_PROXY)."""
    if urllib.request.proxy_bypass(host):
        return None
    url = urllib.request.getproxies().get(scheme)
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
