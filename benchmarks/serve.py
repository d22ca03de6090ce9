"""Load on the server: N concurrent clients on loopback, each posting image pairs (MNIST test
digits drawn dark on white at the pad's upload size, as the page sends them) to /api/compare, one
request after another, for a bounded time and count. Three servers in one run: the torch path it
replaced (benchmarks/torch_path.py), `digitcmp serve` (ONNX Runtime), and `digitcmp serve
--workers 2`. Prints, per server and N: requests, throughput, p50 and p99 latency, and errors
(non-200 answers or failed connections; must be 0), then issue 29's goal (8 clients: >= 150 req/s,
p99 <= 100 ms).

    python benchmarks/serve.py [--clients 1 8] [--seconds 10] [--max-requests 3000] [--workers 2]

The clients share the machine's cores with the server, so they are as light as a client can be:
one asyncio task per client on a kept-alive connection, each request's bytes (multipart, two
PNGs) built once, the answer read by its Content-Length (about 0.1 ms of CPU a request; httpx
took about 4 ms, which capped what the benchmark could show on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitcmp.testing.live_server import serve_command, server_process

PAD_SIDE = 112  # the page sends its 280x280 drawing pads at 112x112 (web/app.js, UPLOAD_SIDE)
GOAL_RPS, GOAL_P99_MS, GOAL_CLIENTS = 150.0, 100.0, 8
HERE = Path(__file__).resolve().parent


def pad_images(count: int, side: int) -> list[bytes]:
    from digitcmp.core.data import load_mnist

    test = load_mnist("test")
    out = []
    for i in range(count):
        img = Image.fromarray(255 - test.images[i]).resize((side, side), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def multipart_request(host: str, a: bytes, b: bytes) -> bytes:
    boundary = b"digitcmpbenchmarkboundary"
    parts = b""
    for field, data in ((b"a", a), (b"b", b)):
        parts += (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + field + b'"; filename="'
                  + field + b'.png"\r\nContent-Type: image/png\r\n\r\n' + data + b"\r\n")  # fmt: skip
    parts += b"--" + boundary + b"--\r\n"
    head = (f"POST /api/compare HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary="
            f"{boundary.decode()}\r\nContent-Length: {len(parts)}\r\n\r\n").encode()  # fmt: skip
    return head + parts


async def _exchange(reader, writer, request: bytes) -> bool:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    return status == 200


async def load(url: str, requests: list[bytes], clients: int, seconds: float, max_requests: int) -> dict:
    host, port = url.removeprefix("http://").split(":")
    latencies, errors, sent = [], 0, 0
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection(host, int(port))
        i = k
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                start = time.perf_counter()
                try:
                    ok = await asyncio.wait_for(_exchange(reader, writer, requests[i % len(requests)]), 30)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, StopIteration):
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok
                i += clients
                if not ok:  # a broken connection: a new one
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": len(ms), "throughput": len(ms) / wall,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "errors": errors}  # fmt: skip


def torch_server():
    return server_process([sys.executable, str(HERE / "torch_path.py"), "serve", "--port", "0"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, GOAL_CLIENTS])
    parser.add_argument("--seconds", type=float, default=10.0, help="per server and client count (default 10)")
    parser.add_argument("--max-requests", type=int, default=3000, help="per server and client count (default 3000)")
    parser.add_argument("--side", type=int, default=PAD_SIDE, help=f"image side in pixels (default {PAD_SIDE})")
    parser.add_argument("--workers", type=int, default=2, help="processes of the last server (default 2)")
    args = parser.parse_args()
    images = pad_images(40, args.side)
    servers = {
        "torch path (before)": torch_server,
        "digitcmp serve": lambda: serve_command(),
        f"digitcmp serve --workers {args.workers}": lambda: serve_command("--workers", str(args.workers)),
    }
    results = {}
    print(f"{args.side}x{args.side} PNG pairs, {args.seconds:g} s per level")
    print(f"{'server':<28} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for name, start in servers.items():
        with start() as (_, line):
            if not line.startswith("serving http://127.0.0.1:"):
                raise SystemExit(f"{name} did not start: {line!r}")
            url = line.split()[1].rstrip("/")
            requests = [multipart_request(url.removeprefix("http://"), images[i], images[(i * 7 + 3) % len(images)])
                        for i in range(len(images))]  # fmt: skip
            asyncio.run(load(url, requests, 4, 3.0, 200))  # warm-up (every worker process)
            for n in args.clients:
                r = results[name, n] = asyncio.run(load(url, requests, n, args.seconds, args.max_requests))
                print(f"{name:<28} {n:>7} {r['requests']:>8} {r['throughput']:>7.1f} {r['p50']:>7.1f} "
                      f"{r['p99']:>7.1f} {r['errors']:>6}")  # fmt: skip
    if GOAL_CLIENTS in args.clients:
        for name in servers:
            r = results[name, GOAL_CLIENTS]
            ok = r["throughput"] >= GOAL_RPS and r["p99"] <= GOAL_P99_MS and r["errors"] == 0
            print(f"goal at {GOAL_CLIENTS} clients (>= {GOAL_RPS:.0f} req/s, p99 <= {GOAL_P99_MS:.0f} ms), {name}: "
                  f"{r['throughput']:.0f} req/s, p99 {r['p99']:.0f} ms: {'met' if ok else 'missed'}")  # fmt: skip


if __name__ == "__main__":
    main()
