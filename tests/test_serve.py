"""`digitcmp serve`'s API: answers equal `predict`'s, every bad request is one line of JSON with a
4xx status and the server goes on serving, bodies and images are bounded, model work does not
block the event loop, and the report page comes from the report's own code."""

import io
import json
import sys
import threading

import numpy as np
import pytest
import torch

from digitcmp.testing.extras import require

require("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from digitcmp.app.limits import MAX_BATCH_PAIRS, MAX_BODY_BYTES  # noqa: E402
from digitcmp.app.server import create_app  # noqa: E402
from digitcmp.app.synthetic import CASES, render  # noqa: E402
from digitcmp.testing.hostile_files import png_header_only  # noqa: E402
from digitcmp.testing.live_server import serve_command, serving  # noqa: E402
from digitcmp.testing.processes import scaled_wait  # noqa: E402


@pytest.fixture(scope="module")
def digit_images(mnist_test):
    """(label, PNG or JPEG bytes) for 12 MNIST test digits drawn as people's images."""
    rng = np.random.default_rng(7)
    picks = rng.choice(len(mnist_test.labels), size=12, replace=False)
    return [
        (int(mnist_test.labels[i]), render(mnist_test.images[i], CASES[k % len(CASES)], rng)) for k, i in enumerate(picks)
    ]


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def still_serving(client, digit_images):
    (_, a), (_, b) = digit_images[:2]
    r = client.post("/api/compare", files={"a": ("a.png", a), "b": ("b.png", b)})
    assert r.status_code == 200, r.text


def test_health_names_the_model_and_its_figures(client):
    h = client.get("/api/health").json()
    assert h["model"] == "deploy.safetensors" and h["arch"] == "siamese_cnn" and h["test_time_views"] == 8
    assert 0 <= h["metrics"]["test_error"] < 0.02 and h["report"] is False


def test_image_pairs_answer_as_predict_does(client, predictor, digit_images, tmp_path):
    """The API's answer for two image files is predict()'s for the same files, exactly; the views
    are the 14x14 inputs the model read."""
    for k in range(0, len(digit_images), 2):
        (la, a), (lb, b) = digit_images[k : k + 2]
        r = client.post("/api/compare", files={"a": ("x.png", a), "b": ("y.png", b)})
        assert r.status_code == 200, r.text
        got = r.json()
        assert set(got) == {"le", "p_le", "digits", "digit_probs", "unsure", "doubt", "views", "regions"}
        (tmp_path / "a.img").write_bytes(a)
        (tmp_path / "b.img").write_bytes(b)
        (want,) = predictor.predict([tmp_path / "a.img", tmp_path / "b.img"])
        assert got["p_le"] == want["p_le"] and got["digits"] == want["digits"] and got["le"] == want["le"]
        assert got["digit_probs"] == want["digit_probs"] and got["unsure"] == want["unsure"]
        views = np.asarray(got["views"])
        assert views.shape == (2, 14, 14) and views.min() >= 0 and views.max() <= 255 and views.max() > 100
        if not got["unsure"]:
            assert got["digits"] == [la, lb]


def test_a_batch_of_tensors_answers_as_predict_does(client, predictor, mnist_test):
    x = mnist_test.pooled[:40].reshape(20, 2, 14, 14)
    r = client.post("/api/compare", json={"pairs": x.tolist()})
    assert r.status_code == 200, r.text
    answers = r.json()["answers"]
    want = predictor.predict(x)
    assert [a["p_le"] for a in answers] == [w["p_le"] for w in want]
    assert [a["digits"] for a in answers] == [w["digits"] for w in want]
    one = client.post("/api/compare", json={"pairs": x[0].tolist()})  # a single pair [2][14][14]
    assert one.json()["answers"][0]["p_le"] == predictor.predict(x[0])[0]["p_le"]


def _bad_json_bodies():
    pair = np.zeros((2, 14, 14)).tolist()
    return [
        ("not json", b"{pairs: nope", "not valid JSON"),
        ("a list", json.dumps([pair]).encode(), "expected a JSON object"),
        ("no pairs", b"{}", "expected a JSON object"),
        ("a number", b'{"pairs": 3}', "expected a list of pairs"),
        ("empty", b'{"pairs": []}', "holds no pairs"),
        ("ragged", json.dumps({"pairs": [[[0] * 14] * 14, [[0] * 13] * 14]}).encode(), "ragged"),
        ("wrong shape", json.dumps({"pairs": [[[0] * 14] * 14]}).encode(), "expected an array of shape"),
        ("strings", json.dumps({"pairs": [[[["1"] * 14] * 14] * 2]}).encode(), "must be numbers"),
        ("booleans", json.dumps({"pairs": [[[[True] * 14] * 14] * 2]}).encode(), "must be numbers"),
        ("NaN", json.dumps({"pairs": [[[[float("nan")] * 14] * 14] * 2]}).encode(), "NaN or infinite"),
        ("out of range", json.dumps({"pairs": [[[[300] * 14] * 14] * 2]}).encode(), "must be in 0..255"),
        ("too many", json.dumps({"pairs": [[[[0] * 14] * 14] * 2] * (MAX_BATCH_PAIRS + 1)}).encode(), "at most"),
    ]


@pytest.mark.parametrize("case,body,expected", _bad_json_bodies(), ids=[c[0] for c in _bad_json_bodies()])
def test_bad_json_bodies_are_one_line_400s(client, digit_images, case, body, expected):
    r = client.post("/api/compare", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
    assert expected in r.json()["error"] and "\n" not in r.json()["error"]
    still_serving(client, digit_images)


def _bad_forms(tmp_path):
    good = render(np.pad(np.full((12, 4), 255.0), 8), "thick", np.random.default_rng(0))
    huge = png_header_only(tmp_path / "huge.png", 20000, 20000).read_bytes()
    wide = png_header_only(tmp_path / "wide.png", 5000, 4000).read_bytes()  # under the CLI's bound, over the server's
    truncated = good[: len(good) // 2]
    return {
        "missing b": ({"a": ("a.png", good)}, 400, "field b must be an image file"),
        "b is text": ({"a": ("a.png", good), "b": (None, "hello")}, 400, "field b must be an image file"),
        "empty file": ({"a": ("a.png", b""), "b": ("b.png", good)}, 400, "image a is empty"),
        "not an image": ({"a": ("a.png", b"%PDF-1.4 hello"), "b": ("b.png", good)}, 400, "accepted formats: PNG, JPEG"),
        "truncated": ({"a": ("a.png", good), "b": ("b.png", truncated)}, 400, "image b"),
        "huge header": ({"a": ("a.png", huge), "b": ("b.png", good)}, 400, "megapixels are accepted"),
        "over the served bound": ({"a": ("a.png", good), "b": ("b.png", wide)}, 400, "at most 16 megapixels"),
        "too many files": (
            [("a", ("a.png", good)), ("b", ("b.png", good)), ("c", ("c.png", good))],
            400,
            "cannot read the form",
        ),
    }


@pytest.mark.parametrize("case", list(_bad_forms(__import__("pathlib").Path("/tmp"))))
def test_bad_image_requests_are_one_line_4xx(client, digit_images, tmp_path, case, decoded_sizes):
    files, status, expected = _bad_forms(tmp_path)[case]
    r = client.post("/api/compare", files=files)
    assert r.status_code == status and set(r.json()) == {"error"}, r.text
    assert expected in r.json()["error"] and "\n" not in r.json()["error"]
    from digitcmp.app.limits import UPLOAD_MAX_PIXELS

    # refused from headers and bounds: no image over the served bound was decoded
    assert all(width * height <= UPLOAD_MAX_PIXELS for width, height in decoded_sizes), decoded_sizes
    still_serving(client, digit_images)


@pytest.mark.parametrize("blank", [np.full((40, 40), 255), np.zeros((64, 32)), np.full((50, 50), 128)])
def test_a_blank_image_is_an_unsure_answer_as_a_blank_array_is(client, digit_images, blank):
    (_, good) = digit_images[0]
    r = client.post("/api/compare", files={"a": ("a.png", good), "b": ("b.png", png(blank.astype(np.uint8)))})
    assert r.status_code == 200, r.text
    assert r.json()["unsure"] and r.json()["doubt"].endswith("blank: no digit to read")
    flat = np.zeros((1, 2, 14, 14))
    flat[0, 0] = np.asarray(Image.open(io.BytesIO(good)).convert("L").resize((14, 14)))
    r = client.post("/api/compare", json={"pairs": flat.tolist()})
    assert r.status_code == 200 and r.json()["answers"][0]["doubt"].endswith("blank: no digit to read"), r.text


def test_large_bodies_get_413_declared_or_streamed(client, digit_images):
    big = b"\0" * (MAX_BODY_BYTES + 1)
    r = client.post("/api/compare", files={"a": ("a.png", big), "b": ("b.png", b"x")})
    assert r.status_code == 413 and "too large" in r.json()["error"]

    def chunks():  # no content-length: the server counts as it reads
        for _ in range(MAX_BODY_BYTES // 2**16 + 2):
            yield b"\0" * 2**16

    r = client.post("/api/compare", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["error"]
    still_serving(client, digit_images)


@pytest.mark.parametrize(
    "method,path,headers,status",
    [
        ("post", "/api/compare", {"content-type": "text/plain"}, 415),
        ("get", "/api/compare", {}, 405),
        ("get", "/nothing-here", {}, 404),
        ("get", "/static/..%2f..%2fpyproject.toml", {}, 404),
        ("get", "/static/%2e%2e/%2e%2e/setup.py", {}, 404),
        ("get", "/static/index.html", {}, 404),
        ("get", "/docs", {}, 404),  # FastAPI's interactive docs would load scripts from a CDN
        ("get", "/report/", {}, 404),  # no --db
    ],
)
def test_other_requests_are_one_line_json(client, digit_images, method, path, headers, status):
    r = getattr(client, method)(path, headers=headers, **({"content": b"x"} if method == "post" else {}))
    assert r.status_code == status and set(r.json()) == {"error"}, r.text
    still_serving(client, digit_images)


def test_page_and_openapi_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="side-template"' in page.text and "http" not in page.text.split("<body>")[0]
    for name in ("app.js", "style.css"):
        text = client.get(f"/static/{name}").text
        assert "http://" not in text and "https://" not in text  # nothing fetched from elsewhere
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/compare"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert "/api/health" in spec["paths"]


@pytest.mark.slow  # a live server
def test_model_work_does_not_block_the_event_loop(predictor, digit_images, monkeypatch):
    """While one comparison is held inside the model, health answers: the comparison is let go only
    after health's answer, so a blocked event loop would answer health only once the hold ran out."""
    import httpx

    held, release, returned = threading.Event(), threading.Event(), threading.Event()
    compare = predictor.compare
    hold = scaled_wait(30)

    def held_compare(*args, **kwargs):
        held.set()
        release.wait(hold)
        try:
            return compare(*args, **kwargs)
        finally:
            returned.set()

    app = create_app(predictor, "deploy.safetensors")
    monkeypatch.setattr(predictor, "compare", held_compare)
    (_, a), (_, b) = digit_images[:2]
    with serving(app) as (url, _):
        result = {}
        worker = threading.Thread(
            target=lambda: result.setdefault("r", httpx.post(f"{url}/api/compare", files={"a": a, "b": b}, timeout=2 * hold))
        )
        worker.start()
        try:
            assert held.wait(hold)
            assert httpx.get(f"{url}/api/health", timeout=2 * hold).status_code == 200
            answered_while_held = not returned.is_set()
        finally:
            release.set()
            worker.join(2 * hold)
        assert result["r"].status_code == 200
    assert answered_while_held


def test_report_page_is_the_reports_own_markdown(predictor, tmp_path):
    from digitcmp.study.report import write_report
    from digitcmp.testing.stores import synthetic_store

    store = synthetic_store(tmp_path / "r.sqlite", seeds=2, epochs=2)
    store.close()
    client = TestClient(create_app(predictor, "m", db=tmp_path / "r.sqlite"), base_url="http://127.0.0.1")
    page = client.get("/report/")
    assert page.status_code == 200 and "<table>" in page.text
    assert client.get("/api/health").json()["report"] is True
    from digitcmp.study.store import Store

    text = write_report(Store(tmp_path / "r.sqlite", read_only=True), tmp_path / "md", tables=False).read_text()
    for line in text.splitlines():  # every table row of the report's Markdown is on the page
        if line.startswith("| ") and "---" not in line:
            first_cell = line.split("|")[1].strip()
            assert first_cell.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page.text
    figures = [part.split('"')[0] for part in page.text.split('src="')[1:]]
    assert figures, "the report's figures are on the page"
    for src in figures:
        r = client.get(f"/report/{src}")
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert client.get("/report/figures/..%2f..%2fr.sqlite").status_code == 404


@pytest.mark.slow  # a server in a subprocess
def test_serve_command_prints_its_address_and_answers(tmp_path):
    """The real command on a free port: it prints its loopback address, answers, and stops on SIGINT."""
    import httpx

    with serve_command() as (proc, line):
        assert line.startswith("serving http://127.0.0.1:"), line
        url = line.split()[1]
        assert httpx.get(f"{url}api/health", timeout=10).json()["model"] == "deploy.safetensors"
    assert proc.returncode == 130 and "Traceback" not in proc.stderr_text


def test_serve_refuses_bad_settings_in_one_line(tmp_path, capsys, monkeypatch, one_line_error):
    import socket

    one_line_error(["serve", "--port", "70000"], "--port")
    one_line_error(["serve", "--db", str(tmp_path / "none.sqlite")], "does not exist")
    (tmp_path / "foreign.sqlite").write_bytes(b"not a database at all" * 100)
    one_line_error(["serve", "--db", str(tmp_path / "foreign.sqlite")], "foreign.sqlite")
    one_line_error(["serve", "--model", str(tmp_path / "none.safetensors")], "none.safetensors")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        one_line_error(["serve", "--port", str(taken.getsockname()[1])], "cannot listen on 127.0.0.1")
    one_line_error(["serve", "--host", "no-such-host.invalid", "--port", "0"], "cannot listen on")
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as without the extra
    one_line_error(["serve"], "pip install -e '.[serve]'")


def test_requests_that_arrive_together_share_a_model_call(predictor):
    import asyncio

    import anyio

    from digitcmp.app.batching import MicroBatcher

    x = torch.rand(24, 2, 14, 14, generator=torch.Generator().manual_seed(2)) * 255
    alone = [predictor.compare(x[i : i + 1], ["p"])[0] for i in range(24)]

    async def together() -> tuple[list, MicroBatcher]:
        batcher = MicroBatcher(predictor, anyio.CapacityLimiter(2))
        sizes = [1, 1, 3, 1, 2, 1, 1, 4, 1, 1, 2, 1, 1, 1, 2, 1]  # 24 pairs in 16 requests of different sizes
        starts = np.cumsum([0] + sizes[:-1])
        results = await asyncio.gather(*(batcher.compare(x[s : s + n], ["p"] * n) for s, n in zip(starts, sizes)))
        return [r for rs in results for r in rs], batcher

    got, batcher = asyncio.run(together())
    assert batcher.pairs == 24 and batcher.calls < 16  # fewer model calls than requests
    for a, b in zip(got, alone):  # and each answer as it is alone
        assert a["digits"] == b["digits"] and a["doubt"] == b["doubt"]
        assert a["p_le"] == pytest.approx(b["p_le"], rel=1e-6, abs=1e-9)
