"""The request guard (docs/server.md#safety): token on every request, loopback Host names only,
no cross-site writes, capped bodies, security headers, no CORS."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipsearch.library import Library
from clipsearch.server import create_app
from clipsearch.server.security import CONTENT_SECURITY_POLICY, TOKEN_COOKIE, is_loopback
from tests.fakes import ColourEncoder, make_image

TOKEN = "correct-horse-battery-staple"
LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("security")
    for c in ("red", "blue"):
        make_image(tmp / "photos" / f"{c}.jpg", c)
    with Library(tmp / "lib", encoder=ColourEncoder()) as lib:
        lib.index([tmp / "photos"])
        yield lib


@pytest.fixture(scope="module")
def app(lib):
    return create_app(lib, token=TOKEN)


def _free_port(*, ipv6: bool = False) -> int:
    family, host = (socket.AF_INET6, "::1") if ipv6 else (socket.AF_INET, "127.0.0.1")
    with socket.socket(family) as s:
        try:
            s.bind((host, 0))
        except OSError:
            pytest.skip("this machine has no IPv6 loopback to listen on")
        return s.getsockname()[1]


def fresh(app, base_url: str = LOCAL) -> TestClient:
    return TestClient(app, base_url=base_url)


# -- token -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    ["/", "/static/app.js", "/api/status", "/api/search?q=red", "/api/items/1/media", "/api/index"],
)
def test_every_request_needs_the_token(app, url):
    with fresh(app) as c:
        r = c.get(url)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


def test_bearer_token_is_accepted_and_a_wrong_one_is_not(app):
    with fresh(app) as c:
        assert c.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        for bad in (TOKEN[:-1], TOKEN + "x", "", TOKEN.upper()):
            r = c.get("/api/status", headers={"Authorization": f"Bearer {bad}"})
            assert r.status_code == 401
        r = c.post("/api/search", json={"q": "red"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200


def test_query_token_sets_a_strict_httponly_cookie_that_then_suffices(app):
    with fresh(app) as c:
        page = c.get("/", params={"token": TOKEN})
        assert page.status_code == 200
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{TOKEN_COOKIE}=") and "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        # The page's <img>/<video> URLs carry no token: the cookie authenticates them.
        assert c.get("/api/items/1/thumb").status_code == 200
        assert c.post("/api/search", json={"q": "red"}).status_code == 200


def test_query_token_is_not_accepted_for_writes(app):
    with fresh(app) as c:
        r = c.post("/api/search", params={"token": TOKEN}, json={"q": "red"})
        assert r.status_code == 401


def test_wrong_cookie_is_refused(app):
    with fresh(app) as c:
        c.cookies.set(TOKEN_COOKIE, "nope")
        assert c.get("/api/status").status_code == 401


@pytest.mark.parametrize(
    "other",
    [
        'session={"user":1}',  # JSON in a cookie: SimpleCookie stops parsing at it
        "prefs=a b c",
        'theme="dark',
        "=orphan",
        "flag",
        "x=\\054\\073",
    ],
)
def test_another_apps_malformed_cookie_does_not_hide_the_token_cookie(app, other):
    with fresh(app) as c:
        for header in (f"{other}; {TOKEN_COOKIE}={TOKEN}", f"{TOKEN_COOKIE}={TOKEN}; {other}"):
            r = c.get("/api/status", headers={"Cookie": header})
            assert r.status_code == 200, header
        r = c.get("/api/status", headers={"Cookie": f"{other}; {TOKEN_COOKIE}=wrong"})
        assert r.status_code == 401


def test_no_token_configured_means_open(lib):
    with fresh(create_app(lib)) as c:
        assert c.get("/api/status").status_code == 200


# -- host, origin, CORS ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "127.0.0.1.evil.example",
        "10.0.0.5",
        "[::ffff:10.0.0.5]:8000",
    ],
)
def test_foreign_host_header_is_refused_on_loopback(lib, host):
    """DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends Host: evil.example."""
    with fresh(create_app(lib)) as c:
        r = c.get("/api/search", params={"q": "red"}, headers={"Host": host})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8000",
        "localhost",
        "localhost:1234",
        "[::1]:8000",
        "[0:0:0:0:0:0:0:1]:8000",
        "[::ffff:127.0.0.1]:8000",
    ],
)
def test_loopback_host_headers_are_accepted(lib, host):
    with fresh(create_app(lib)) as c:
        assert c.get("/api/status", headers={"Host": host}).status_code == 200


def test_exposed_server_accepts_any_host(lib):
    with fresh(create_app(lib, allowed_hosts=None, token=TOKEN), base_url="http://photos.lan") as c:
        r = c.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200


def test_cross_site_post_is_refused(lib):
    with fresh(create_app(lib)) as c:
        r = c.post("/api/search", json={"q": "red"}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
        r = c.post("/api/index", json={"roots": ["/"]}, headers={"Origin": "null"})
        assert r.status_code == 403
        same = c.post("/api/search", json={"q": "red"}, headers={"Origin": LOCAL})
        assert same.status_code == 200


def test_no_cors_headers_ever(lib):
    with fresh(create_app(lib)) as c:
        got = c.get("/api/search", params={"q": "red"}, headers={"Origin": "http://evil.example"})
        pre = c.options(
            "/api/search",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
    for r in (got, pre):
        assert not any(h.lower().startswith("access-control-") for h in r.headers)
    assert pre.status_code == 403


# -- headers and body cap ----------------------------------------------------------------------
@pytest.mark.parametrize("url", ["/", "/api/status", "/api/nothing", "/static/style.css"])
def test_security_headers_on_every_response(lib, url):
    with fresh(create_app(lib)) as c:
        r = c.get(url)
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_chunked_body_over_the_cap_is_413(lib):
    def chunks():
        for _ in range(64):
            yield b"x" * 65536  # 4 MiB in total, no Content-Length

    with fresh(create_app(lib, max_upload_bytes=1_000_000)) as c:
        r = c.post("/api/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_declared_length_over_the_cap_is_413(lib):
    with fresh(create_app(lib, max_upload_bytes=1000)) as c:
        r = c.post(
            "/api/search",
            content=b"{" + b" " * 400_000 + b"}",
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 413


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.2", True),
        ("0:0:0:0:0:0:0:1", True),
        ("[0:0:0:0:0:0:0:1]", True),
        ("::ffff:127.0.0.1", True),
        ("[::FFFF:7f00:1]", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("0:0:0:0:0:0:0:0", False),
        ("::ffff:192.168.1.4", False),
        ("fe80::1%lo", False),
        ("127.0.0.1.evil.example", False),
        ("192.168.1.4", False),
        ("::", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_serve_defaults_to_loopback_and_warns_when_exposed_without_token(
    monkeypatch, tmp_path: Path
):
    """`clipsearch serve` binds 127.0.0.1 unless told otherwise; exposed without a token it
    warns and refuses new folders. listen.run is replaced to capture what would run."""
    from clipsearch.cli import serve_cmd
    from clipsearch.server import listen

    seen: dict = {}

    def fake_run(app, sock, **kw):
        seen["app"] = app
        seen["address"] = sock.getsockname()
        seen["kw"] = kw

    monkeypatch.setattr(listen, "run", fake_run)
    port = _free_port()

    class FakeLib:
        path = tmp_path
        model_spec = "fake:colour"
        encoder = ColourEncoder()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    from clipsearch.cli import options

    monkeypatch.setattr(options, "open_library", lambda *a, **k: FakeLib())
    serve_cmd.serve(
        library=tmp_path,
        model=None,
        precision="auto",
        host="127.0.0.1",
        port=port,
        token=None,
        max_upload_mb=1,
        open_browser=False,
    )
    assert seen["address"] == ("127.0.0.1", port)
    state = seen["app"].state.clipsearch
    assert state.allow_new_roots is True and state.max_upload_bytes == 2**20
    serve_cmd.serve(
        library=tmp_path,
        model=None,
        precision="auto",
        host="0.0.0.0",
        port=_free_port(),
        token=None,
        max_upload_mb=1,
        open_browser=False,
    )
    assert seen["app"].state.clipsearch.allow_new_roots is False


@pytest.mark.parametrize("host", ["::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"])
def test_serve_on_an_ipv6_loopback_spelling_keeps_the_host_check(monkeypatch, tmp_path, host):
    """Every spelling of loopback is loopback: the Host (DNS-rebinding) check stays on and
    the page may index new folders, with no "exposed" warning."""
    from clipsearch.cli import options, serve_cmd
    from clipsearch.server import listen

    seen: dict = {}
    monkeypatch.setattr(listen, "run", lambda app, sock, **kw: seen.update(app=app))

    class FakeLib:
        path = tmp_path
        model_spec = "fake:colour"
        encoder = ColourEncoder()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(options, "open_library", lambda *a, **k: FakeLib())
    serve_cmd.serve(
        library=tmp_path,
        model=None,
        precision="auto",
        host=host,
        port=_free_port(ipv6=":" in host and not host.startswith("::ffff:")),
        token=None,
        max_upload_mb=1,
        open_browser=False,
    )
    assert seen["app"].state.clipsearch.allow_new_roots is True
    with fresh(seen["app"]) as c:
        r = c.get("/api/status", headers={"Host": "evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host"
