"""The HTTP API under load: concurrent clients submitting tiny fits and reading results on
loopback, and `jobs show` through the API against the same command reading the database.

    .venv/bin/python bench/bench_server.py [--clients 50] [--seconds 60] [--workers 1]
        [--users 10] [--max-pending 20] [--show-repeats 10] [--read-repeats 200]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/kiln_bench]
        [--broker-url redis://127.0.0.1:6379/7] [--server-pool-size N]
    .venv/bin/python bench/bench_server.py --clients 5 --seconds 5      # a smoke run

The bench builds its own stack and takes it down again, also on Ctrl-C or a failure: it
creates the database (it must not exist) and drops it at the end, uses a Redis db number that
must be empty and flushes it at the end, runs `jobs db upgrade`, creates one `submit` token per
user with `jobs token create`, and starts `jobs server` and `--workers` `jobs worker --queues
cpu` processes. Each user first fits once (so there is a finished job to read), then the clients
(asyncio + httpx, one connection each, client i is user i % users) loop for `--seconds`: 1
request in 10 a submit (POST /jobs/fit: linreg on the rugged CSV, 20 steps, 50 draws) while
fewer than `--max-pending` submitted jobs are known unfinished (else a read instead), the rest
reads of the user's jobs in the ratio 2:3:2:2: GET /jobs?limit=20, /jobs/{id}, /jobs/{id}/losses
?tail=50 and /jobs/{id}/params of a finished fit. Any status >= 400 or exception is an error.
Latencies are the client's (send -> body read). CPU seconds of the server, the workers, the
PostgreSQL backends and this process in the window are read from /proc.

Then, with the load stopped: `jobs show ID` as a subprocess over the API (KILN_API_URL +
KILN_TOKEN) and direct (KILN_DATABASE_URL), `--show-repeats` times each, interleaved; and the
same two reads in this warm process through RemoteClient and Client, `--read-repeats` each.
`--server-pool-size N` starts the server with SQLAlchemy pool_size = max_overflow = N (patched
into db.session.make_engine; the server's code is unchanged) to measure a bigger pool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import psycopg
from proc_cpu import BackendCpu, cpu_of, machine_busy  # bench/, beside this file
from server_stack import ROOT, Stack

RUGGED = ROOT.parent / "shared" / "data" / "rugged_data.csv"
FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"
FIT = {"model": "linreg", "formula": FORMULA, "steps": "20", "num_samples": "50"}
KINDS = ("submit", "list", "show", "losses", "params")
WEIGHTS = (1, 2, 3, 2, 2)  # of 10 requests: 1 submit, 9 reads
ENDED = {"succeeded", "failed", "cancelled"}


@dataclass
class Book:
    """What the clients know of each user's jobs (from submits, shows and lists)."""

    status: dict[str, dict[str, str]]  # user -> job id -> last status seen
    submitted: list[str] = field(default_factory=list)
    samples: list[tuple[str, float, int]] = field(default_factory=list)  # kind, seconds, status
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def pending(self) -> int:
        return sum(s not in ENDED for jobs in self.status.values() for s in jobs.values())

    def note(self, user: str, doc: dict[str, Any]) -> None:
        self.status[user][doc["id"]] = doc["status"]


async def call(book: Book, http: httpx.AsyncClient, kind: str, method: str, url: str,
               **kwargs: Any) -> Any:  # fmt: skip
    started = time.perf_counter()
    try:
        response = await http.request(method, url, **kwargs)
        status = response.status_code
        body: Any = response.json() if status < 400 else response.text[:300]
    except Exception as e:  # noqa: BLE001 (any failure of a request is an error we count)
        status, body = 0, f"{type(e).__name__}: {e}"
    book.samples.append((kind, time.perf_counter() - started, status))
    if status == 0 or status >= 400:
        key = f"{kind} {status or 'exception'}"
        book.errors[key] += 1
        book.examples.setdefault(key, f"{method} {url}: {body}")
        return None
    return body


async def client(book: Book, base: str, user: str, token: str, seed: int, deadline: float,
                 max_pending: int) -> None:  # fmt: skip
    rng = random.Random(seed)
    data = RUGGED.read_bytes()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        while time.perf_counter() < deadline:
            kind = rng.choices(KINDS, WEIGHTS)[0]
            if kind == "submit" and book.pending() >= max_pending:
                kind = rng.choices(KINDS[1:], WEIGHTS[1:])[0]
            jobs = book.status[user]
            if kind == "submit":
                files = {"data": ("rugged_data.csv", data, "text/csv")}
                fields = {**FIT, "seed": str(rng.randrange(10**6))}
                got = await call(book, http, kind, "POST", "/jobs/fit", data=fields, files=files)
                for job in (got or {}).get("jobs", []):
                    book.note(user, job)
                    book.submitted.append(job["id"])
            elif kind == "list":
                for doc in await call(book, http, kind, "GET", "/jobs", params={"limit": 20}) or []:
                    book.note(user, doc)
            elif kind == "show":
                doc = await call(book, http, kind, "GET", f"/jobs/{rng.choice(list(jobs))}")
                if doc:
                    book.note(user, doc)
            elif kind == "losses":
                job_id = rng.choice(list(jobs))
                await call(book, http, kind, "GET", f"/jobs/{job_id}/losses", params={"tail": 50})
            else:
                done = [j for j, s in jobs.items() if s == "succeeded"]
                await call(book, http, kind, "GET", f"/jobs/{rng.choice(done)}/params")


async def prepare(stack: Stack, tokens: dict[str, str], workers: int) -> dict[str, str]:
    """Waits for the server and the workers, then fits once per user; user -> that job's id."""
    base = f"http://127.0.0.1:{stack.port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        user, token = next(iter(tokens.items()))
        auth = {"Authorization": f"Bearer {token}"}
        for _ in range(600):
            stack.check_alive()
            try:
                live = await http.get("/workers/live", params={"queue": "cpu"}, headers=auth)
                if live.status_code == 200 and len(live.json()["workers"]) >= workers:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        else:
            raise SystemExit("the server or the workers did not come up in 120 s")
        first: dict[str, str] = {}
        for user, token in tokens.items():
            auth = {"Authorization": f"Bearer {token}"}
            files = {"data": ("rugged_data.csv", RUGGED.read_bytes(), "text/csv")}
            got = await http.post("/jobs/fit", data={**FIT, "seed": "0"}, files=files,
                                  headers=auth)  # fmt: skip
            if got.status_code != 201:
                raise SystemExit(f"seed fit for {user}: {got.status_code} {got.text}")
            first[user] = got.json()["jobs"][0]["id"]
        for _ in range(3000):
            stack.check_alive()
            statuses = []
            for user, job_id in first.items():
                auth = {"Authorization": f"Bearer {tokens[user]}"}
                statuses.append((await http.get(f"/jobs/{job_id}", headers=auth)).json()["status"])
            if all(s in ENDED for s in statuses):
                if set(statuses) != {"succeeded"}:
                    raise SystemExit(f"seed fits ended {Counter(statuses)}")
                return first
            await asyncio.sleep(0.2)
        raise SystemExit("the seed fits did not finish in 10 minutes")


async def load(stack: Stack, tokens: dict[str, str], first: dict[str, str],
               args: argparse.Namespace) -> tuple[Book, float]:  # fmt: skip
    book = Book({user: {job_id: "succeeded"} for user, job_id in first.items()})
    users = list(tokens)
    base = f"http://127.0.0.1:{stack.port}"
    started = time.perf_counter()
    deadline = started + args.seconds
    await asyncio.gather(*(
        client(book, base, users[i % len(users)], tokens[users[i % len(users)]], i, deadline,
               args.max_pending)
        for i in range(args.clients)
    ))  # fmt: skip
    return book, time.perf_counter() - started


def report(book: Book, wall: float) -> None:
    print(f"{'kind':<8} {'count':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
          f" {'errors':>7}")  # fmt: skip
    for kind in (*KINDS, "total"):
        rows = [s for s in book.samples if kind == "total" or s[0] == kind]
        if not rows:
            continue
        ms = np.array([s[1] for s in rows]) * 1000
        p50, p95 = np.percentile(ms, [50, 95])
        bad = sum(s[2] == 0 or s[2] >= 400 for s in rows)
        print(f"{kind:<8} {len(rows):>7} {len(rows) / wall:>8.1f} {p50:>8.1f} {p95:>8.1f}"
              f" {ms.max():>8.1f} {bad:>7}")  # fmt: skip
    for key, count in book.errors.most_common():
        print(f"  error {key}: {count}, e.g. {book.examples[key]}")


def submitted_outcome(database_url: str, ids: list[str]) -> Counter[str]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM jobs WHERE id = ANY(%s) GROUP BY status",
                            (ids,)).fetchall()  # fmt: skip
    return Counter({str(status): int(n) for status, n in rows})


def compare_show(stack: Stack, job_id: str, token: str, repeats: int) -> None:
    """`jobs show ID` as a subprocess, over the API and direct, interleaved."""
    direct = dict(stack.env)
    api = {k: v for k, v in stack.env.items() if k not in ("KILN_DATABASE_URL", "KILN_BROKER_URL")}
    api |= {"KILN_API_URL": f"http://127.0.0.1:{stack.port}", "KILN_TOKEN": token}
    times: dict[str, list[float]] = {"api": [], "direct": []}
    outputs: dict[str, set[str]] = {"api": set(), "direct": set()}
    for _ in range(repeats):
        for label, env in (("api", api), ("direct", direct)):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "kiln.cli", "show", job_id], env=env,
                                  capture_output=True, text=True, cwd=ROOT)  # fmt: skip
            times[label].append(time.perf_counter() - started)
            if done.returncode != 0:
                raise SystemExit(f"jobs show ({label}): exit {done.returncode}\n{done.stderr}")
            outputs[label].add(done.stdout)
    a, d = statistics.median(times["api"]), statistics.median(times["direct"])
    same = outputs["api"] == outputs["direct"] and len(outputs["api"]) == 1
    print(f"`jobs show {job_id}` as a subprocess, {repeats} runs each way, interleaved (medians):")
    print(
        f"  direct (KILN_DATABASE_URL)          {d * 1000:8.1f} ms"
        f"   (min {min(times['direct']) * 1000:.1f}, max {max(times['direct']) * 1000:.1f})"
    )
    print(
        f"  over the API (KILN_API_URL + TOKEN) {a * 1000:8.1f} ms"
        f"   (min {min(times['api']) * 1000:.1f}, max {max(times['api']) * 1000:.1f})"
    )
    print(f"  API - direct {(a - d) * 1000:+.1f} ms, API / direct {a / d:.3f};"
          f" same output both ways: {'yes' if same else 'NO'}")  # fmt: skip


def compare_reads(stack: Stack, job_id: str, token: str, repeats: int) -> None:
    """What `jobs show` reads (job_record + attempts), in this warm process, by the Client on
    the database and by the RemoteClient over the API, interleaved: the API's own cost."""
    from kiln.client import Client
    from kiln.remote import RemoteClient

    direct = Client(database_url=stack.database_url, broker_url=stack.broker_url,
                    home=stack.home)  # fmt: skip
    api = RemoteClient(api_url=f"http://127.0.0.1:{stack.port}", token=token)
    times: dict[str, list[float]] = {"api": [], "direct": []}
    with direct, api:
        for i in range(repeats + 5):  # the first 5 of each warm up (connections, caches)
            for label, reader in (("api", api), ("direct", direct)):
                started = time.perf_counter()
                job = reader.job_record(job_id)
                reader.attempts(job.id)
                if i >= 5:
                    times[label].append(time.perf_counter() - started)
    a, d = statistics.median(times["api"]), statistics.median(times["direct"])
    print(f"the same reads in one warm process (job_record + attempts), {repeats} each, medians:"
          f" direct {d * 1000:.2f} ms, API {a * 1000:.2f} ms (2 requests);"
          f" API - direct {(a - d) * 1000:+.2f} ms, API / direct {a / d:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--users", type=int, default=10, help="token users (clients share)")
    parser.add_argument(
        "--max-pending",
        type=int,
        default=20,
        help="submit only while fewer submitted jobs are known unfinished",
    )
    parser.add_argument("--show-repeats", type=int, default=10)
    parser.add_argument("--read-repeats", type=int, default=200)
    parser.add_argument("--server-pool-size", type=int, default=None,
                        help="run the server with SQLAlchemy pool_size = max_overflow = N"
                        " (default: the server as it is: 5 + 10)")  # fmt: skip
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/kiln_bench"
    )
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/7")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the stack comes down
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    stack = Stack(args.database_url, args.broker_url)
    try:
        stack.start(args.workers, args.server_pool_size)
        users = min(args.users, args.clients)
        tokens: dict[str, str] = {}
        for i in range(users):
            out = stack.jobs("token", "create", "--user", f"u{i:02d}", "--role", "submit", "--json")
            tokens[f"u{i:02d}"] = json.loads(out)["token"]
        first = asyncio.run(prepare(stack, tokens, args.workers))
        server_pid = stack.procs[0][1].pid
        worker_pids = {p.pid for label, p in stack.procs if label.startswith("worker")}
        pg = BackendCpu(stack.backends)
        before = [cpu_of({server_pid}), cpu_of(worker_pids)]
        sessions0, xacts0 = stack.counters()
        reaped0 = stack.reaped_cpu()
        pg.start()
        busy0, total0 = machine_busy()
        me0, load0 = time.process_time(), os.getloadavg()[0]
        pool = f"pool_size={args.server_pool_size}" if args.server_pool_size else "default pool"
        print(f"load: {args.clients} clients for {args.seconds:g} s (server pid {server_pid})",
              file=sys.stderr, flush=True)  # fmt: skip
        book, wall = asyncio.run(load(stack, tokens, first, args))
        me, busy1, total1 = time.process_time() - me0, *machine_busy()
        after = [cpu_of({server_pid}), cpu_of(worker_pids)]
        used = [
            sum(a.values()) - sum(b.get(p, 0.0) for p in a)
            for b, a in zip(before, after, strict=True)
        ]
        used += [pg.seconds(), stack.reaped_cpu() - reaped0]
        time.sleep(1.0)  # PostgreSQL publishes its counters at most once a second
        sessions1, xacts1 = stack.counters()
        outcome = submitted_outcome(args.database_url, book.submitted)
        stack.check_alive()
        print(
            f"{args.clients} clients ({users} users), {args.workers} worker(s), server {pool},"
            f" {wall:.1f} s on"
            f" loopback; load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after"
        )
        report(book, wall)
        print(
            f"submitted {len(book.submitted)} fits; at the end of the run: "
            + ", ".join(f"{n} {s}" for s, n in sorted(outcome.items()))
        )
        busy, total = busy1 - busy0, total1 - total0
        print(f"CPU seconds in the run ({wall:.1f} s x {os.cpu_count()} cores ="
              f" {total:.1f} s; busy {busy:.1f}): server {used[0]:.1f}, workers {used[1]:.1f},"
              f" PostgreSQL backends {used[2]:.1f} (ours, sampled) + {used[3]:.1f} (exited in the"
              f" run, any database's), clients (this process) {me:.1f}, everything else"
              f" {busy - sum(used) - me:.1f}")  # fmt: skip
        xacts = xacts1 - xacts0
        print(f"PostgreSQL: {sessions1 - sessions0} new connections, {xacts} transactions in the"
              f" run (server, workers: {xacts / len(book.samples):.1f} per request)")  # fmt: skip
        user = next(iter(first))
        compare_show(stack, first[user], tokens[user], args.show_repeats)
        compare_reads(stack, first[user], tokens[user], args.read_repeats)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
