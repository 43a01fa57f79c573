"""Ingress benchmark: signed WhatsApp webhooks against the real service vs a bare endpoint.

    .venv/bin/python bench/ingress.py [--seconds 10] [--connections 64] [--threads 2]

Starts an embedded PostgreSQL and the embedded Kafka-protocol broker, migrates, runs the real
service (``switchboard serve`` in a subprocess: uvicorn + uvloop + httptools, the gateway with
its dedup/archive statement and acks=all publish) and, in the same run, a bare FastAPI app
(``--bare``: reads the body, answers 200) under the same uvicorn settings. Load: ``wrk``
(``apt-get install wrk``) with pre-signed, all-distinct webhooks (every request is new work:
a dedup insert, an archive row and a Kafka send), ``--connections`` connections.

Prints, for both: requests/s, p50 and p99; their ratio; then the service at 70 % of its peak
rate (each connection paced with wrk's ``delay()``; the achieved rate is printed) with its
p50/p99. Targets (issue 4): ratio ≥ 0.6, p99 ≤ 50 ms at 70 % of peak. Also prints how many
events the service deduplicated, published directly and spooled (a sanity check that the
figures are not those of a broken path). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

ROOT = Path(__file__).resolve().parent.parent
APP_SECRET = "bench-app-secret"
PHONE_NUMBER_ID = "106540352242922"

LUA = r"""
local d = tonumber(os.getenv("WRK_DELAY_MS") or "0")
local prefix = os.getenv("WRK_BODIES")
local counter = 0  -- (tid is a per-thread global set by setup(); never shadow it here)
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  bodies = {}
  sigs = {}
  local f = assert(io.open(prefix .. "." .. tid, "r"))
  for line in f:lines() do
    local tab = line:find("\t", 1, true)
    sigs[#sigs + 1] = line:sub(1, tab - 1)
    bodies[#bodies + 1] = line:sub(tab + 1)
  end
  f:close()
  i = 0
end
if d > 0 then
  function delay() return d end
end
function request()
  i = i + 1
  if i > #bodies then i = 1 end
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = sigs[i],
  }, bodies[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


# ---- the bare endpoint (run as a subprocess of this script) -----------------------------------


def run_bare(port: int) -> None:
    app = FastAPI()

    @app.post("/webhooks/{platform}/{channel_id}")
    async def webhook(platform: str, channel_id: str, request: Request) -> Response:
        await request.body()
        return Response(b'{"ok":true}', media_type="application/json")

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


# ---- helpers ------------------------------------------------------------------------------


def webhook(n: int, peers: int) -> bytes:
    peer = str(16_505_550_000 + n % peers)
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": peer}],
                            "messages": [
                                {
                                    "from": peer,
                                    "id": f"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5{n:012d}",
                                    "timestamp": str(1749416383 + n),
                                    "type": "text",
                                    "text": {"body": "Does it come in another color? " * 3},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def write_bodies(directory: Path, name: str, start: int, count: int, threads: int) -> str:
    prefix = directory / name
    files = [open(f"{prefix}.{t}", "w") for t in range(threads)]  # noqa: SIM115
    try:
        for n in range(start, start + count):
            body = webhook(n, peers=1000)
            sig = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
            files[n % threads].write(f"{sig}\t{body.decode()}\n")
    finally:
        for f in files:
            f.close()
    return str(prefix)


def wrk(
    url: str, bodies: str, lua: Path, args: argparse.Namespace, delay_ms: float = 0
) -> dict[str, float]:
    env = {**os.environ, "WRK_BODIES": bodies, "WRK_DELAY_MS": f"{delay_ms:.3f}"}
    out = subprocess.run(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=args.seconds + 60,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests, duration_us, p50, p99, bad_status, socket_errors = map(int, match.groups())
    return {
        "rps": requests / (duration_us / 1e6),
        "requests": requests,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "non_2xx": bad_status,
        "socket_errors": socket_errors,
    }


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def api(method: str, url: str, key: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def line(label: str, r: dict[str, float]) -> str:
    return (
        f"{label:<28} {r['rps']:>8.0f} req/s   p50 {r['p50_ms']:6.2f} ms   "
        f"p99 {r['p99_ms']:7.2f} ms   non-2xx {int(r['non_2xx'])}   "
        f"socket errors {int(r['socket_errors'])}"
    )


# ---- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bare", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare is not None:
        run_bare(args.bare)
        return
    if shutil.which("wrk") is None:
        sys.exit("bench/ingress.py needs wrk: apt-get install -y wrk")

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from switchboard.crypto import generate_key
    from switchboard.embedded import EmbeddedBroker, EmbeddedPostgres, free_port

    work = Path(tempfile.mkdtemp(prefix="sb-bench-ingress-"))
    procs: list[subprocess.Popen[bytes]] = []
    postgres = EmbeddedPostgres(work / "pg")
    broker = EmbeddedBroker()
    try:
        postgres.start()
        broker.start()
        postgres.create_database("bench")
        admin_key = "sb_admin_bench_" + os.urandom(8).hex()
        port, bare_port = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
            "SWITCHBOARD_DATABASE_URL": postgres.url("bench"),
            "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "SWITCHBOARD_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "SWITCHBOARD_KAFKA_TOPIC_PARTITIONS": "3",
            "SWITCHBOARD_ENCRYPTION_KEYS": generate_key(),
            "SWITCHBOARD_ADMIN_API_KEY": admin_key,
            "SWITCHBOARD_HTTP_PORT": str(port),
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
        }
        subprocess.run(
            [sys.executable, "-m", "switchboard", "migrate"],
            env=env,
            check=True,
            capture_output=True,
        )
        procs.append(
            subprocess.Popen([sys.executable, "-m", "switchboard", "serve"], env=env, cwd=work)
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(Path(__file__)), "--bare", str(bare_port)], cwd=work
            )
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        wait_http(f"http://127.0.0.1:{bare_port}/docs")
        channel = api(
            "POST",
            f"{base}/v1/channels",
            admin_key,
            {
                "platform": "whatsapp",
                "name": "bench",
                "account_id": PHONE_NUMBER_ID,
                "credentials": {
                    "access_token": "bench-token",
                    "app_secret": APP_SECRET,
                    "verify_token": "bench-verify",
                },
            },
        )
        path = f"/webhooks/whatsapp/{channel['id']}"
        lua = work / "ingress.lua"
        lua.write_text(LUA)
        per_run = max(20_000, args.seconds * 12_000)
        print(f"generating {3 * per_run} signed webhooks ...", flush=True)
        warm = write_bodies(work, "warm", 0, per_run // 4, args.threads)
        peak_bodies = write_bodies(work, "peak", per_run, per_run, args.threads)
        paced_bodies = write_bodies(work, "paced", 2 * per_run, per_run, args.threads)

        quick = argparse.Namespace(**{**vars(args), "seconds": 3})
        wrk(f"{base}{path}", warm, lua, quick)  # warm-up: JIT-free, but pools, caches, batches
        wrk(f"http://127.0.0.1:{bare_port}{path}", warm, lua, quick)
        service = wrk(f"{base}{path}", peak_bodies, lua, args)
        bare = wrk(f"http://127.0.0.1:{bare_port}{path}", peak_bodies, lua, args)
        target = 0.7 * service["rps"]
        # Closed loop with think time: rate ≈ connections / (latency + delay).
        delay_ms = max(0.0, args.connections / target * 1000 - service["p50_ms"] / 2)
        paced = wrk(f"{base}{path}", paced_bodies, lua, args, delay_ms=delay_ms)

        engine = create_async_engine(postgres.url("bench"))

        async def counts() -> tuple[int, int]:
            async with engine.connect() as conn:
                dedup = (await conn.execute(text("SELECT count(*) FROM gateway_dedup"))).scalar()
                spool = (await conn.execute(text("SELECT count(*) FROM gateway_spool"))).scalar()
            await engine.dispose()
            return int(dedup or 0), int(spool or 0)

        import asyncio

        dedup_rows, spool_rows = asyncio.run(counts())
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()  # noqa: S310
        spooled = sum(
            float(m.group(1))
            for m in re.finditer(r'outcome="spooled",platform="whatsapp"\} ([0-9.e+]+)', metrics)
        )

        print()
        print(
            f"wrk: {args.threads} threads, {args.connections} connections, {args.seconds}s; "
            f"{os.cpu_count()} CPUs shared by wrk, PostgreSQL, the broker and the server"
        )
        print(line("bare FastAPI (peak)", bare))
        print(line("switchboard ingress (peak)", service))
        print(f"ratio ingress/bare: {service['rps'] / bare['rps']:.2f}   (target >= 0.6)")
        print(line(f"ingress at {paced['rps'] / service['rps']:.0%} of peak", paced))
        print(f"p99 at ~70% of peak: {paced['p99_ms']:.2f} ms   (target <= 50 ms)")
        print(
            f"events deduplicated (rows): {dedup_rows}; spooled during the run: {spooled:.0f}; "
            f"left in spool: {spool_rows}"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
