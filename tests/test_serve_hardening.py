"""The server against what clients can do wrong: deep JSON, slow headers and bodies, malformed HTTP,
methods a route does not take, a missing token. Live servers listen on 127.0.0.1 only, every client
is bounded in count and time, and every server is stopped by the test that started it."""

import json
import os
import socket
import threading
import time

import numpy as np
import pytest

from digitcmp.testing.extras import require

require("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from digitcmp.app import http_guard, limits, routes, server  # noqa: E402
from digitcmp.app.server import create_app  # noqa: E402
from digitcmp.cli import main  # noqa: E402
from digitcmp.testing.live_server import serve_command, serving  # noqa: E402
from digitcmp.testing.processes import scaled_wait  # noqa: E402

pytestmark = pytest.mark.slow  # live servers and slow clients: outside the fast tier (pytest -m "not slow")

TOKEN = "s3cret-token-for-tests-0123456789"


def valid_pairs(n: int = 1) -> list:
    return np.random.default_rng(0).integers(0, 256, (n, 2, 14, 14)).tolist()


def still_answers(client) -> None:
    r = client.post("/api/compare", json={"pairs": valid_pairs()})
    assert r.status_code == 200, r.text


DEEP_BODIES = {
    "lists 100000 deep": "[" * 100_000 + "]" * 100_000,
    "objects 50000 deep": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "pairs 100000 deep": '{"pairs": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "unclosed 200000 deep": "[" * 200_000,
    "mixed 30 deep": '{"pairs": ' + '[{"x":' * 15 + "1" + "}]" * 15 + "}",
    "pairs one level too deep": json.dumps({"pairs": [[[[[0] * 14] * 14] * 2]] * 1}).replace("[", "[[" * 6, 1),
}


@pytest.mark.parametrize("case", list(DEEP_BODIES))
def test_deeply_nested_json_is_a_400_not_a_500(client, case):
    r = client.post("/api/compare", content=DEEP_BODIES[case], headers={"content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
    assert "\n" not in r.json()["error"]
    still_answers(client)


def test_twenty_five_deep_bodies_at_once_are_all_400(predictor):
    body = DEEP_BODIES["lists 100000 deep"].encode()
    with serving(create_app(predictor, "m")) as (url, _):
        import httpx

        statuses = []

        def send() -> None:
            statuses.append(httpx.post(f"{url}/api/compare", content=body, headers={"content-type": "application/json"},
                                       timeout=30).status_code)  # fmt: skip

        threads = [threading.Thread(target=send) for _ in range(25)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert statuses == [400] * 25
        assert httpx.post(f"{url}/api/compare", json={"pairs": valid_pairs()}, timeout=30).status_code == 200


@pytest.mark.parametrize("where", [(0, 0, 0, 0), (0, 1, 13, 13), (2, 0, 7, 3)])
@pytest.mark.parametrize("value", [True, False])
def test_true_and_false_are_not_pixels(client, where, value):
    pairs = valid_pairs(3)
    i, side, row, col = where
    pairs[i][side][row][col] = value
    r = client.post("/api/compare", json={"pairs": pairs})
    assert r.status_code == 400 and "numbers in 0..255" in r.json()["error"]


@pytest.mark.parametrize("extra", [{"c": ("c.png", b"x")}, {"note": (None, "hi")}, {"": (None, "")}])
def test_a_form_with_fields_besides_a_and_b_is_refused(client, extra):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (28, 28), 255).save(buf, format="PNG")
    files = {"a": ("a.png", buf.getvalue()), "b": ("b.png", buf.getvalue()), **extra}
    error = client.post("/api/compare", files=files).json()["error"]
    assert "unexpected form field" in error or "cannot read the form" in error


def test_valid_json_nested_as_the_api_says_is_answered(client):
    r = client.post("/api/compare", json={"pairs": valid_pairs(3), "note": {"deep": [[[["ok"]]]]}})
    assert r.status_code == 200 and len(r.json()["answers"]) == 3


# ---- slow clients (live server, short deadlines)


@pytest.fixture
def quick_deadlines(monkeypatch):
    monkeypatch.setattr(http_guard.GuardedH11Protocol, "header_timeout_s", 1.0)
    monkeypatch.setattr(server, "BODY_IDLE_S", 1.0)
    monkeypatch.setattr(server, "BODY_TOTAL_S", 3.0)


def raw_exchange(url: str, chunks: list[bytes], pause: float = 0.0, wait: float = 30.0) -> tuple[bytes, bool]:
    """Send chunks with a pause between them, then read until the server closes; (answer, whether
    the server closed the connection: False when the client's own `wait` ran out first)."""
    host, port = url.removeprefix("http://").split(":")
    closed = False
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # closed on us mid-way: what a deadline does
                break
            time.sleep(pause)
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
    return answer, closed


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "chunks, pause",
    [
        ([], 0.0),  # connects and says nothing
        ([b"GET / HTTP/1.1\r\n"], 0.0),  # a request line, then nothing
        (
            [b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n", b"X-C: 3\r\n", b"X-D: 4\r\n"],
            0.5,
        ),  # trickled
    ],
    ids=["silent", "request line only", "headers trickled"],
)
def test_slow_headers_get_408_and_the_connection_closes(predictor, quick_deadlines, chunks, pause):
    with serving(create_app(predictor, "m")) as (url, _):
        answer, closed = raw_exchange(url, chunks, pause)
        assert closed  # by the server's 1 s deadline, not the client's own 30 s
        if chunks:
            status, body = status_and_json(answer)
            assert status == 408 and "headers" in body["error"]


@pytest.mark.parametrize(
    "chunks, pause",
    [
        ([b"x" * 10], 0.0),  # 10 bytes of a declared 1000, then a stall
        ([b"[" * 1] * 20, 0.4),  # a byte every 0.4 s: never idle for 1 s, but over 3 s in all
    ],
    ids=["stalled", "trickled"],
)
def test_slow_bodies_get_408(predictor, quick_deadlines, chunks, pause):
    head = b"POST /api/compare HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    with serving(create_app(predictor, "m")) as (url, _):
        answer, closed = raw_exchange(url, [head, *chunks], pause)
        status, body = status_and_json(answer)
        assert closed and status == 408 and "too slow" in body["error"]


def test_twenty_slow_clients_do_not_hold_the_server(predictor, quick_deadlines):
    import httpx

    with serving(create_app(predictor, "m")) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        slow = [socket.create_connection((host, int(port)), timeout=10) for _ in range(20)]
        try:
            for i, sock in enumerate(slow):
                slow_body = (
                    b"POST /api/compare HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 99\r\n\r\n{"
                )
                sock.sendall(b"GET / HTTP/1.1\r\n" if i % 2 else slow_body)
            r = httpx.post(f"{url}/api/compare", json={"pairs": valid_pairs()}, timeout=30)
            assert r.status_code == 200  # answered while they wait (they hold their connections till their deadlines)
            time.sleep(4.5)  # past every deadline
            for sock in slow:
                sock.settimeout(5)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                assert int(data.split()[1]) == 408  # each was answered and closed
        finally:
            for sock in slow:
                sock.close()


# ---- malformed HTTP, methods, HEAD


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Without Colon\r\n\r\n",
        b"POST /api/compare HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40) + b"\r\n\r\n",  # a TLS hello to a plain server
    ],
    ids=["not http", "no colon", "bad length", "space in target", "nul in header", "no host", "two lengths", "tls"],
)
def test_malformed_http_is_answered_as_json(predictor, request_bytes):
    with serving(create_app(predictor, "m")) as (url, _):
        answer, _ = raw_exchange(url, [request_bytes])
        status, body = status_and_json(answer)
        assert status == 400 and "malformed HTTP" in body["error"]


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("POST", "/api/health", {"GET", "HEAD"}),
        ("DELETE", "/", {"GET", "HEAD"}),
        ("GET", "/api/compare", {"POST"}),
        ("PUT", "/api/compare", {"POST"}),
        ("PATCH", "/static/app.js", {"GET", "HEAD"}),
    ],
)
def test_405_says_what_is_allowed(client, method, path, allowed):
    r = client.request(method, path)
    assert r.status_code == 405 and set(r.json()) == {"error"}
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


@pytest.mark.parametrize("path", ["/", "/api/health", "/static/app.js", "/static/style.css", "/openapi.json"])
def test_head_works_wherever_get_does(client, path):
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


# ---- the token


@pytest.fixture(scope="module")
def guarded(predictor, tmp_path_factory):
    from digitcmp.study.store import Store

    db = tmp_path_factory.mktemp("store") / "r.sqlite"
    assert main(["reproduce", "--experiment", "table1", "--seeds", "1", "--epochs", "1", "--no-progress", "--db", str(db),
                 "--out", str(db.parent / "out")]) == 0  # fmt: skip
    Store(db, read_only=True).close()
    with TestClient(
        create_app(predictor, "m", db=db, token=TOKEN), base_url="http://127.0.0.1", raise_server_exceptions=False
    ) as c:
        yield c


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": TOKEN},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": "Bearer "},
    ],  # fmt: skip
    ids=["none", "wrong", "no scheme", "basic", "longer", "empty"],
)
def test_with_a_token_the_api_refuses_requests_without_it(guarded, headers):
    r = guarded.post("/api/compare", json={"pairs": valid_pairs()}, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and set(r.json()) == {"error"}
    assert guarded.get("/report/", headers=headers).status_code == 401
    assert guarded.get("/report/?token=nope").status_code == 401


def test_with_the_token_everything_answers(guarded):
    ok = guarded.post("/api/compare", json={"pairs": valid_pairs()}, headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert guarded.get("/").status_code == 200 and guarded.get("/api/health").status_code == 200  # open: no secrets
    guarded.cookies.clear()
    page = guarded.get(f"/report/?token={TOKEN}")  # a link from the page
    assert page.status_code == 200
    figures = [part.split('"')[0] for part in page.text.split('src="')[1:]]
    assert figures and all(guarded.get(f"/report/{f}").status_code == 200 for f in figures)  # through its cookie


def test_serve_takes_its_token_from_the_flag_or_the_environment():
    import httpx

    for args, env in (((f"--token={TOKEN}",), None), ((), {**os.environ, "DIGITCMP_TOKEN": TOKEN})):
        with serve_command(*args, env=env) as (_, line):
            assert line.startswith("serving http://127.0.0.1:") and f"/#token={TOKEN} " in line, line
            url = line.split()[1].split("#")[0]
            assert httpx.post(f"{url}api/compare", json={"pairs": valid_pairs()}, timeout=10).status_code == 401
            auth = {"authorization": f"Bearer {TOKEN}"}
            r = httpx.post(f"{url}api/compare", json={"pairs": valid_pairs()}, headers=auth, timeout=10)
            assert r.status_code == 200


def test_a_host_off_loopback_is_announced():
    with serve_command("--host", "0.0.0.0") as (proc, line):
        assert line.startswith("serving http://0.0.0.0:")
    err = proc.stderr_text
    assert "warning: listening on 0.0.0.0, reachable from the network" in err and "--token" in err


@pytest.mark.parametrize(
    "token", ["short", "has a space in it ok", "x" * 300, "tab\there-0123456789", "ünïcödé-token-0123456", ""]
)
def test_bad_tokens_are_one_line(capsys, monkeypatch, token):
    assert main(["serve", "--port", "0", "--token", token]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "16 to 256 visible ASCII" in err
    if not token:
        return  # an empty variable is an unset one (and the server would start)
    monkeypatch.setenv("DIGITCMP_TOKEN", token)
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "$DIGITCMP_TOKEN" in err


WIDE_BODIES = {
    "empty lists": "[" + ",".join(["[]"] * 400_000) + "]",
    "empty lists as pairs": '{"pairs": [' + ",".join(["[]"] * 400_000) + "]}",
    "objects": '{"pairs": [' + ",".join(["{}"] * 400_000) + "]}",
    "numbers": '{"pairs": [' + ",".join(["0"] * 1_000_000) + "]}",
    "numbers in few lists": '{"pairs": [[' + "],[".join(",".join(["1"] * 1000) for _ in range(500)) + "]]}",
}


@pytest.mark.parametrize("case", list(WIDE_BODIES))
def test_wide_json_is_refused_by_its_counts_before_parsing(client, monkeypatch, case):
    """Small lists and numbers cost far more memory parsed than their bytes: counted first."""
    body = WIDE_BODIES[case].encode()
    assert len(body) < limits.MAX_BODY_BYTES
    loads = json.loads

    def small_only(text, *args, **kwargs):  # (the client parses the short answer)
        if len(text) > 10_000:
            pytest.fail("parsed a body over the counts")
        return loads(text, *args, **kwargs)

    monkeypatch.setattr(limits.json, "loads", small_only)
    r = client.post("/api/compare", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "lists" in r.json()["error"] and str(limits.MAX_BATCH_PAIRS) in r.json()["error"]


def test_a_full_batch_is_within_the_counts(client):
    body = json.dumps({"pairs": np.full((limits.MAX_BATCH_PAIRS, 2, 14, 14), 255).tolist()}, indent=1).encode()
    assert limits.parse_json_body(body)["pairs"][0][0][0][0] == 255


def test_an_image_request_is_answered_between_the_chunks_of_a_large_batch(predictor):
    """A batch is answered a chunk at a time: an image request sent while it runs is answered
    before the batch is (the order of the answers, not their times, is what is checked)."""
    import httpx

    chunks = 12
    pairs = valid_pairs(chunks * limits.BATCH_CHUNK_PAIRS)
    app = create_app(predictor, "m")
    batcher = app.state.served.batcher
    finished = []
    with serving(app) as (url, _):
        import io

        from PIL import Image, ImageDraw

        img = Image.new("L", (112, 112), 255)
        ImageDraw.Draw(img).line([(56, 16), (56, 96)], fill=0, width=9)
        png = io.BytesIO()
        img.save(png, format="PNG")

        def batch() -> None:
            r = httpx.post(f"{url}/api/compare", json={"pairs": pairs}, timeout=300)
            finished.append(("batch", r.status_code, len(r.json()["answers"])))

        thread = threading.Thread(target=batch)
        thread.start()
        deadline = time.monotonic() + scaled_wait(120)
        while batcher.pairs == 0 and time.monotonic() < deadline:  # the batch's first chunk is being answered
            time.sleep(0.005)
        files = {"a": ("a.png", png.getvalue()), "b": ("b.png", png.getvalue())}
        r = httpx.post(f"{url}/api/compare", files=files, timeout=300)
        finished.append(("image", r.status_code, r.json()["digits"]))
        thread.join(timeout=300)
    assert finished[0][:2] == ("image", 200), finished
    assert finished[1] == ("batch", 200, len(pairs)), finished


def test_ctrl_c_stops_serve_while_it_works_and_nothing_it_started_outlives_it():
    import signal
    import subprocess

    import httpx

    from digitcmp.run.ray_watchdog import descendants  # every process below one, from /proc

    with serve_command() as (proc, line):
        url = line.split()[1].rstrip("/")
        pairs = valid_pairs(limits.MAX_BATCH_PAIRS)
        errors = []

        def busy() -> None:  # full batches and images at once: the server is working when Ctrl-C comes
            try:
                httpx.post(f"{url}/api/compare", json={"pairs": pairs}, timeout=60)
            except httpx.HTTPError as err:
                errors.append(err)

        clients = [threading.Thread(target=busy) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(1.0)  # (the requests are in: not a time that is asserted)
        children = set(descendants(proc.pid))
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)  # a hang is a failure; the shutdown bound itself is http_guard.SHUTDOWN_S
        except subprocess.TimeoutExpired:
            pytest.fail("serve did not stop after Ctrl-C while answering")
        for c in clients:
            c.join(timeout=60)
        assert all(not os.path.exists(f"/proc/{pid}") for pid in children)
    assert proc.returncode in (0, 130), proc.returncode
    assert "Traceback" not in proc.stderr_text, proc.stderr_text


def test_an_upload_whose_decode_is_cut_off_gets_a_400_that_says_why(client, monkeypatch):
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 800), np.uint8)).save(out, format="PNG")
    monkeypatch.setattr(routes, "UPLOAD_DECODE_SECONDS", 0.0)  # every decode is past its deadline at once
    r = client.post("/api/compare", files={"a": ("a.png", out.getvalue()), "b": ("b.png", out.getvalue())})
    assert r.status_code == 400 and "cut off" in r.json()["error"] and "image a" in r.json()["error"], r.text
    monkeypatch.undo()
    still_answers(client)
