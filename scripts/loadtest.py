#!/usr/bin/env python
"""Bounded load test of a local ``nci serve``: requests per second, p50/p99 latency, errors, and
the latency of ``/healthz`` probed on its own connection while the load runs.

    nci serve --index INDEX --port 8000 &
    python scripts/loadtest.py --url http://127.0.0.1:8000 --data DATASET \\
        --requests 2000 --concurrency 16 --methods nci,dense,pq,bm25

For each method it sends ``--requests`` single-query ``POST /v1/search`` requests, ``--concurrency``
at a time, with queries taken in order (cycling) from the dataset's test split, after a few
warm-up requests that are not counted. A method stops early after ``--max-seconds``; the table
then shows how many requests were sent. Any non-200 answer or connection failure is an error.
Only loopback addresses are accepted: this is not a tool for loading other people's servers.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname
    if not host:
        raise SystemExit(f"--url {url}: no host")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise SystemExit(f"--url {url}: cannot resolve {host} ({e})") from e
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(
            f"--url {url}: {host} is not a loopback address; the load test only targets local servers"
        )


def load_queries(args: argparse.Namespace) -> list[str]:
    if args.queries_file:
        queries = [line.strip() for line in Path(args.queries_file).read_text().splitlines() if line.strip()]
    else:
        from nci.data import split_queries

        queries = list(split_queries(args.data, args.split).values())
    if not queries:
        raise SystemExit("no queries: the split is empty; pass --split or --queries-file")
    return queries


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


async def run_method(
    client, url: str, method: str, queries: list[str], args: argparse.Namespace, headers: dict[str, str]
) -> dict:
    async def one(query: str) -> tuple[float, str | None]:
        body = {"query": query, "k": args.k, "method": method, "snippets": False}
        if args.beam and method == "nci":
            body["beam"] = args.beam
        start = time.perf_counter()
        try:
            r = await client.post(f"{url}/v1/search", json=body, headers=headers)
            error = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
        except Exception as e:  # a failed request is a result of the test, not a crash of it
            error = f"{type(e).__name__}: {e}"
        return time.perf_counter() - start, error

    for q in queries[: args.warmup]:
        await one(q)
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    deadline = time.perf_counter() + args.max_seconds
    lock = asyncio.Lock()

    async def worker() -> None:
        nonlocal sent
        while True:
            async with lock:
                if sent >= args.requests or time.perf_counter() > deadline:
                    return
                query = queries[sent % len(queries)]
                sent += 1
            latency, error = await one(query)
            latencies.append(latency)
            if error:
                errors.append(error)

    health: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        """/healthz latency while the load runs, on a connection of its own."""
        import httpx

        async with httpx.AsyncClient(timeout=args.timeout) as probe_client:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    await probe_client.get(f"{url}/healthz")
                    health.append(time.perf_counter() - t)
                except Exception:  # counted as the timeout it took
                    health.append(time.perf_counter() - t)
                await asyncio.sleep(0.05)

    start = time.perf_counter()
    prober = asyncio.create_task(probe())
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    wall = time.perf_counter() - start
    stop.set()
    await prober
    return {
        "method": method,
        "requests": len(latencies),
        "errors": len(errors),
        "rps": len(latencies) / wall if wall else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "seconds": wall,
        "healthz_p99_ms": percentile(health, 99) * 1000 if health else None,
        "healthz_max_ms": max(health) * 1000 if health else None,
        "first_errors": errors[:3],
    }


async def main_async(args: argparse.Namespace) -> list[dict]:
    import httpx

    url = args.url.rstrip("/")
    queries = load_queries(args)
    headers = {}
    if args.api_key_env:
        headers["X-API-Key"] = os.environ.get(args.api_key_env, "")
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=args.timeout) as client:
        info = (await client.get(f"{url}/v1/index", headers=headers)).json()
        methods = [m for m in args.methods.split(",") if m]
        unavailable = [m for m in methods if info["methods"].get(m, "unknown method")]
        for m in unavailable:
            print(f"skipping {m}: {info['methods'].get(m, 'unknown method')}", file=sys.stderr)
        rows = []
        for method in (m for m in methods if m not in unavailable):
            row = await run_method(client, url, method, queries, args, headers)
            rows.append(row)
            print(
                f"{method}: {row['requests']} requests, {row['errors']} errors, {row['rps']:.1f} req/s",
                file=sys.stderr,
            )
        return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"concurrency {args.concurrency}, k {args.k}" + (f", beam {args.beam}" if args.beam else ""),
        "",
        "| method | requests | errors | req/s | p50 ms | p99 ms | /healthz p99 ms | /healthz max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['healthz_p99_ms']:.1f} | {r['healthz_max_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (loopback only)")
    p.add_argument("--data", type=Path, help="prepared dataset whose test queries to send")
    p.add_argument("--split", default="test")
    p.add_argument("--queries-file", type=Path, help="one query per line, instead of --data")
    p.add_argument("--methods", default="nci,dense,pq,bm25")
    p.add_argument("--requests", type=int, default=2000, help="requests per method (at most 100,000)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (at most 256)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--beam", type=int, default=None, help="nci beam (default: the server's)")
    p.add_argument("--warmup", type=int, default=8, help="uncounted requests per method first")
    p.add_argument("--max-seconds", type=float, default=300.0, help="stop a method after this long")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a request counts as failed")
    p.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if not args.data and not args.queries_file:
        p.error("give --data DATASET or --queries-file FILE")
    if not 1 <= args.requests <= 100_000 or not 1 <= args.concurrency <= 256:
        p.error("--requests must be within 1..100000 and --concurrency within 1..256")
    check_loopback(args.url)
    rows = asyncio.run(main_async(args))
    print(table(rows, args))
    if args.json:
        args.json.write_text(
            json.dumps({"concurrency": args.concurrency, "k": args.k, "rows": rows}, indent=2)
        )
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
