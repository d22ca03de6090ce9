"""origin.py: the local server answers requests for its own address from its own page (or from
clients that are not browsers), never another site's page, a rebound DNS name or another port."""

import pytest

from digitcmp.testing.extras import require

require("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from digitcmp.app.origin import served_hosts  # noqa: E402
from digitcmp.app.server import create_app  # noqa: E402
from digitcmp.cli import main  # noqa: E402

PAIR = {"pairs": [[[[0] * 14] * 14, [[255] * 14] * 14]]}


def one_line_json(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and "\n" not in r.json()["error"]
    for word in words:
        assert word in r.json()["error"], r.json()["error"]


@pytest.mark.parametrize(
    "host",
    ["attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", "localhost.", "10.0.0.1", "[::2]", ""],
)
def test_a_request_for_another_host_is_refused(client, host):
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: the Host header gives it away."""
    for method, path, kwargs in (("GET", "/api/health", {}), ("POST", "/api/compare", {"json": PAIR}), ("GET", "/", {})):
        r = client.request(method, path, headers={"host": host}, **kwargs)
        one_line_json(r, 400, "not this server's address", "127.0.0.1")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "localhost:1234", "LOCALHOST", "[::1]:8000"])
def test_the_loopback_names_are_answered(client, host):
    assert client.get("/api/health", headers={"host": host}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://attacker.example"},
        {"origin": "http://127.0.0.1:9999"},  # another local port: same site for a browser, another origin
        {"origin": "null"},  # a sandboxed frame or a file:// page
        {"origin": "https://127.0.0.1"},  # another scheme
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "http://attacker.example", "sec-fetch-site": "same-origin"},  # the Origin decides
    ],
)
def test_a_post_from_another_origin_is_refused_before_any_work(client, headers):
    batcher = client.app.state.served.batcher
    calls = batcher.calls
    for kwargs in ({"json": PAIR}, {"files": {"a": ("a.png", b"x"), "b": ("b.png", b"x")}}):
        one_line_json(client.post("/api/compare", headers=headers, **kwargs), 403, "cross-origin", "--allow-origin")
    assert batcher.calls == calls  # the model never ran


@pytest.mark.parametrize(
    "headers",
    [{}, {"origin": "http://127.0.0.1"}, {"sec-fetch-site": "same-origin"}, {"sec-fetch-site": "none"}],
    ids=["no browser", "own origin", "same-origin fetch", "typed by the user"],
)
def test_the_pages_own_posts_and_clients_that_are_not_browsers_are_answered(client, headers):
    r = client.post("/api/compare", headers=headers, json=PAIR)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers  # no CORS unless asked


def test_allow_origin_lets_that_origin_post_with_cors_headers(predictor):
    app = create_app(predictor, "m", allow_origins=["http://localhost:3000"])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        preflight = c.options(
            "/api/compare",
            headers={"origin": "http://localhost:3000", "access-control-request-method": "POST",
                     "access-control-request-headers": "content-type"},
        )  # fmt: skip
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        r = c.post("/api/compare", headers={"origin": "http://localhost:3000"}, json=PAIR)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        one_line_json(c.post("/api/compare", headers={"origin": "http://localhost:3001"}, json=PAIR), 403, "cross-origin")


@pytest.mark.parametrize(
    "address, extra, answered, refused",
    [
        ("127.0.0.1", [], ["127.0.0.1", "localhost", "[::1]"], ["example.com", "192.168.1.2"]),
        ("127.0.0.2", [], ["127.0.0.2", "localhost"], ["127.0.0.1.nip.io"]),
        ("::1", [], ["[::1]", "localhost"], ["[::2]"]),
        ("192.168.1.20", [], ["192.168.1.20"], ["localhost", "evil.example"]),
        ("192.168.1.20", ["digits.lan"], ["digits.lan", "192.168.1.20"], ["other.lan"]),
        ("0.0.0.0", [], ["*"], []),
    ],
)
def test_served_hosts(address, extra, answered, refused):
    hosts = served_hosts(address, extra)
    assert all(h in hosts for h in answered) and not any(h in hosts for h in refused)


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--allow-origin", "localhost:3000", "not an origin"),
        ("--allow-origin", "http://localhost:3000/page", "not an origin"),
        ("--allow-origin", "javascript:alert(1)", "not an origin"),
        ("--allow-host", "a.example:80", "not a host name"),
        ("--allow-host", "a b", "not a host name"),
    ],
)
def test_bad_origin_and_host_flags_are_one_line(capsys, flag, value, expected):
    assert main(["serve", flag, value]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") <= 2
