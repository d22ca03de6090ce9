"""Load on `digitcmp serve`: N concurrent clients, each posting image pairs (MNIST test digits
drawn dark on white at the pad's size, as the page sends them) to /api/compare on loopback, one
request after another, for a bounded time and count. Prints, per N: requests, throughput, p50 and
p99 latency, and errors (non-200 answers or failed connections; must be 0).

    python benchmarks/serve.py [--model PATH] [--clients 1 2 4 8] [--seconds 15] [--max-requests 3000]

The server is the real command (`python -m digitcmp serve --port 0`), started here and stopped
at the end; the clients run in this process (asyncio + httpx) and share the machine's cores with it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time

import numpy as np
from PIL import Image

from digitcmp.testing.live_server import serve_command

PAD_SIDE = 112  # the page sends its 280x280 drawing pads at 112x112 (web/app.js, UPLOAD_SIDE)


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


async def load(url: str, images: list[bytes], clients: int, seconds: float, max_requests: int) -> dict:
    import httpx

    latencies, errors = [], 0
    deadline = time.perf_counter() + seconds
    sent = 0

    async def client(k: int, http: httpx.AsyncClient) -> None:
        nonlocal errors, sent
        i = k
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            a, b = images[i % len(images)], images[(i * 7 + 3) % len(images)]
            i += clients
            start = time.perf_counter()
            try:
                r = await http.post(f"{url}/api/compare", files={"a": ("a.png", a), "b": ("b.png", b)})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += not ok

    limits = httpx.Limits(max_connections=clients)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(k, http) for k in range(clients)))
    wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(ms),
        "throughput": len(ms) / wall,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=15.0, help="per client count (default 15)")
    parser.add_argument("--max-requests", type=int, default=3000, help="per client count (default 3000)")
    parser.add_argument("--side", type=int, default=PAD_SIDE, help=f"image side in pixels (default {PAD_SIDE})")
    args = parser.parse_args()
    images = pad_images(40, args.side)
    with serve_command(*(["--model", args.model] if args.model else [])) as (_, line):
        if not line.startswith("serving http://127.0.0.1:"):
            raise SystemExit(f"the server did not start: {line!r}")
        url = line.split()[1].rstrip("/")
        asyncio.run(load(url, images, 2, 3.0, 50))  # warm-up
        print(f"server {url}, {args.side}x{args.side} PNG pairs, {args.seconds:g} s per level")
        print(f"{'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
        for n in args.clients:
            r = asyncio.run(load(url, images, n, args.seconds, args.max_requests))
            print(
                f"{r['clients']:>7} {r['requests']:>8} {r['throughput']:>7.1f} "
                f"{r['p50']:>7.1f} {r['p99']:>7.1f} {r['errors']:>6}"
            )


if __name__ == "__main__":
    main()
