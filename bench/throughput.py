"""The set-phone service over HTTP: the flow vs. the same work written by hand.

The project's standard: a hand-written Starlette handler for the tutorial's set-phone service
serves about 7,000 req/s on one worker on this machine, and the flow doing the same work
should come within 0.8x of that. This script serves, each on one uvicorn worker (access log
off, log level warning, the outbox logging a line per text, dev mode to read the outbox):

- the flow: the reference app (``flowengine.runtime:create_app``), ``flows/set-phone.yaml``;
- the baseline: ``bench/http_baseline.py``, one Starlette handler on the same services;

signs a user up over the auth API (confirming the email through the dev outbox) and loads
``POST /users/set-phone?phoneNumber=...`` on each with ``wrk``, a new valid US mobile number
per request (sends to one number are spaced 60 s apart, so a repeated number would be a
429). After a warm-up, runs alternate between the two servers; each figure is the best run.
Any non-2xx answer fails the benchmark: a 401 or 429 storm must not pass for throughput.

    python bench/throughput.py [--seconds 10] [--runs 3] [--connections 32] [--threads 1]

Needs ``wrk`` (``apt-get install wrk``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path and this file would pass for the
# standard library's ``http`` package (which httpx and urllib import).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))  # the repository, for bench.http_baseline

import argparse
import contextlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator

import httpx
import yaml

from bench.http_baseline import RAISED_LIMIT

ROOT = _HERE.parent
EMAIL, PASSWORD = "bench@example.com", "correct horse battery"
PATH = "/users/set-phone"
GOAL = 0.8

# Phone numbers: index -> +1 AAA NXX XXXX, a permutation of every index below SPACE, so each
# wrk run draws from its own block of indexes and no number is ever sent to twice.
AREAS = (415, 650, 212, 310)
PER_AREA = 800 * 10_000  # exchanges 200-999, lines 0000-9999
SPACE = len(AREAS) * PER_AREA
STRIDE = 4_999_999  # coprime with SPACE (2^11 * 5^6): consecutive indexes land far apart
BLOCK = 1_000_000  # indexes per wrk run; a run uses ~10^5

LUA = """
-- bench/throughput.py: POST set-phone, a new number per request, with the session header.
local areas = {%(areas)s}
local first, threads, counter = 0, 1, 0
local created = 0

function setup(thread)
  thread:set("id", created)
  created = created + 1
end

function init(args)
  first, threads = tonumber(args[1]), tonumber(args[2])
  wrk.method = "POST"
  wrk.headers["Session"] = args[3]
end

function request()
  local index = first + id + counter * threads
  counter = counter + 1
  local n = (index * %(stride)d) %% %(space)d
  local rest = n %% %(per_area)d
  local path = string.format("%(path)s?phoneNumber=%%%%2B1%%d%%d%%04d",
    areas[math.floor(n / %(per_area)d) + 1], 200 + math.floor(rest / 10000), rest %% 10000)
  return wrk.format(nil, path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def lua_script() -> str:
    return LUA % {"areas": ", ".join(map(str, AREAS)), "stride": STRIDE, "space": SPACE,
                  "per_area": PER_AREA, "path": PATH}  # fmt: skip


def phone_number(index: int) -> str:
    """The number the Lua script sends for ``index`` (the same arithmetic)."""
    n = index * STRIDE % SPACE
    rest = n % PER_AREA
    return f"+1{AREAS[n // PER_AREA]}{200 + rest // 10_000}{rest % 10_000:04d}"


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Run:
    """What one wrk run measured (``done()`` in the Lua script prints it)."""

    requests: int
    seconds: float
    connect: int
    read: int
    write: int
    non_2xx: int
    timeouts: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def errors(self) -> int:
        return self.non_2xx + self.connect + self.read + self.write + self.timeouts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(name: str, factory: str, env: dict[str, str], folder: Path) -> Server:
    port, log = free_port(), folder / f"{name}.log"
    command = [sys.executable, "-m", "uvicorn", factory, "--factory", "--app-dir", str(ROOT),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--log-level", "warning", "--no-access-log"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    return Server(name, port, process, log)


@contextlib.contextmanager
def servers(app_dir: Path, folder: Path) -> Iterator[tuple[Server, Server]]:
    """Both servers on one SQLite file in ``folder`` (one sign-up serves both), each its own in-process cache."""
    env = {**os.environ, "FLOWENGINE_APP_DIR": str(app_dir), "FLOWENGINE_DEV": "1",
           "DATABASE_URL": f"sqlite:///{folder / 'app.db'}", "REDIS_URL": "",
           "SMS_PROVIDER": "outbox", "EMAIL_PROVIDER": "outbox"}  # fmt: skip
    started: list[Server] = []
    try:
        started.append(serve("flow", "flowengine.runtime:create_app", env, folder))
        wait_until_up(started[0])  # first, so that only one process creates the tables
        started.append(serve("hand-written", "bench.http_baseline:create_app", env, folder))
        wait_until_up(started[1])
        yield started[0], started[1]
    finally:
        for server in started:
            server.process.terminate()
        for server in started:
            server.process.wait(timeout=10)


def raised_copy(app_dir: Path, folder: Path) -> Path:
    """A copy of the app whose set-phone rate limits allow a benchmark's worth of codes.

    The flow allows one account 5 codes an hour and one address 10; wrk asks for thousands as
    one user from one address. The copy keeps the rate-limit nodes, so every request still
    counts against both, as the hand-written handler does (``RAISED_LIMIT``).
    """
    copy = folder / "app"
    shutil.copytree(app_dir, copy, ignore=shutil.ignore_patterns("data", ".venv", ".git", "*.db*", "tests", "bench"))
    flow_file = copy / "flows" / "set-phone.yaml"
    flow = yaml.safe_load(flow_file.read_text())
    raised = [node for node in flow["nodes"].values() if node.get("type") == "rate-limit"]
    require(len(raised) == 2, f"{flow_file.name}: expected two rate-limit nodes, found {len(raised)}")
    for node in raised:
        node["limit"] = RAISED_LIMIT
    flow_file.write_text(yaml.safe_dump(flow, sort_keys=False))
    return copy


def wait_until_up(server: Server) -> None:
    for _ in range(400):
        if server.process.poll() is not None:
            raise SystemExit(f"the {server.name} server exited:\n{server.tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/_dev/outbox", timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise SystemExit(f"the {server.name} server did not start within 20 s:\n{server.tail()}")


def session_token(server: Server) -> str:
    """Sign up, confirm the email by the link in the dev outbox, sign in: the session token."""
    auth = f"{server.url}/_api/rest/v1/auth"
    with httpx.Client(timeout=30) as client:
        signup = client.post(f"{auth}/signup-email", json={"email": EMAIL, "password": PASSWORD, "nameOrUserData": "Bench"})
        expect(signup, 200, "sign-up")
        link = re.search(r"https?://\S+/_auth/verify\?key=\S+", confirmation_email(client, server.url))
        if link is None:
            raise SystemExit("the confirmation email has no /_auth/verify link")
        confirmed = client.post(link[0])  # as the button on the link's page does: a GET only shows it
        if confirmed.status_code >= 400:
            raise SystemExit(f"confirming the email failed: {confirmed.status_code} {confirmed.text}")
        signin = client.post(f"{auth}/signin-email", json={"email": EMAIL, "password": PASSWORD})
        expect(signin, 200, "sign-in")
        return signin.json()["session"]["token"]


def confirmation_email(client: httpx.Client, url: str) -> str:
    """The text of the confirmation email, which the app sends in the background."""
    for _ in range(100):
        response = client.get(f"{url}/_dev/outbox/email/latest", params={"to": EMAIL})
        if response.status_code == 200:
            return response.text
        time.sleep(0.05)
    raise SystemExit(f"no confirmation email reached the outbox: {response.status_code} {response.text}")


def expect(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code != status:
        raise SystemExit(f"{what}: expected {status}, got {response.status_code} {response.text}")


def check_same_work(flow: Server, hand: Server, token: str) -> None:
    """Before timing anything: both answer alike, both text the code, both space the sends."""
    for index, server in enumerate((flow, hand)):
        number = phone_number(index)
        answer = post(server, token, number)
        require(answer.status_code == 200 and sorted(answer.json()) == ["challengeId", "expiresIn"],
                f"{server.name}: set-phone answered {answer.status_code} {answer.text}")  # fmt: skip
        sms = httpx.get(f"{server.url}/_dev/outbox/sms/latest", params={"to": number}).text
        require(re.fullmatch(r"Your verification code is \d{6}\. It expires in 5 minutes\.", sms) is not None,
                f"{server.name}: the outbox holds {sms!r} for {number}")  # fmt: skip
        again = post(server, token, number).status_code
        require(again == 429, f"{server.name}: a second code to {number} at once answered {again}, not 429")
    cases = (("no session", "", phone_number(2)), ("a bad number", token, "+1201555012x"),
             ("a German mobile", token, "+4915123456789"))  # fmt: skip
    for what, session, number in cases:
        flow_says, hand_says = (shape(post(server, session, number)) for server in (flow, hand))
        require(flow_says == hand_says, f"with {what} the flow answered {flow_says}, the hand-written app {hand_says}")


def shape(answer: httpx.Response) -> tuple[int, list[str]]:
    """An answer's status and its error codes (or, for a success, its keys)."""
    body = answer.json()
    return answer.status_code, [error["code"] for error in body["errors"]] if "errors" in body else sorted(body)


def check_same_logging(flow: Server, hand: Server) -> None:
    """Each server has texted one code so far: both must have logged it alike (a line each, or none)."""
    lines = [server.log.read_text(errors="replace").count("outbox sms to ") for server in (flow, hand)]
    require(lines[0] == lines[1], f"the outbox logged {lines[0]} texts in the flow server, {lines[1]} in the "
                                  "hand-written one: the servers must log alike")  # fmt: skip


def require(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(message)


def post(server: Server, token: str, number: str) -> httpx.Response:
    headers = {"Session": token} if token else {}
    return httpx.post(f"{server.url}{PATH}", params={"phoneNumber": number}, headers=headers, timeout=10)


def check_texted(server: Server, block: int, run: Run, connections: int) -> None:
    """The newest texts went to numbers of the run's block: the Lua script and ``phone_number`` agree.

    wrk counts only answered requests: up to one per connection was still in flight at the end,
    and the next one may already have been drawn.
    """
    sent = {message["to"] for message in httpx.get(f"{server.url}/_dev/outbox").json() if message["channel"] == "sms"}
    drawn = {phone_number(block * BLOCK + index) for index in range(run.requests + 2 * connections)}
    require(bool(sent) and sent <= drawn, f"{server.name}: texts went to numbers outside the run's block: "
                                          f"{sorted(sent - drawn)[:3]}")  # fmt: skip


def load(server: Server, script: Path, block: int, token: str, options: argparse.Namespace, seconds: float) -> Run:
    command = ["wrk", f"-t{options.threads}", f"-c{options.connections}", f"-d{seconds:g}s", "--timeout", "5s",
               "-s", str(script), server.url, "--", str(block * BLOCK), str(options.threads), token]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=seconds + 30)
    line = next((text for text in done.stdout.splitlines() if text.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    requests, micros, *errors, p50, p99 = (int(value) for value in line.split()[1:])
    run = Run(requests, micros / 1e6, *errors, p50 / 1000, p99 / 1000)
    if run.requests >= BLOCK:
        raise SystemExit(f"{run.requests} requests outran the block of {BLOCK} numbers per run: raise BLOCK")
    return run


def refuse_errors(server: Server, run: Run, token: str) -> None:
    """Fail loudly when the server answered errors: the throughput would mean nothing."""
    if run.requests and not run.errors:
        return
    sample = post(server, token, phone_number(3))
    raise SystemExit(
        f"{server.name}: of {run.requests} answers, {run.non_2xx} were not 2xx; socket errors: connect {run.connect}, "
        f"read {run.read}, write {run.write}, timeout {run.timeouts}. A fresh request now answers "
        f"{sample.status_code} {sample.text}\nserver log:\n{server.tail()}"
    )


def report(options: argparse.Namespace, runs: dict[str, list[Run]], load_before: float) -> None:
    best = {name: max(each, key=lambda run: run.rate) for name, each in runs.items()}
    print(f"POST {PATH}: one uvicorn worker each ({stack()}), wrk -t{options.threads} -c{options.connections}, "
          f"best of {options.runs} alternating {options.seconds:g} s runs after a {options.warmup:g} s warm-up")  # fmt: skip
    print(f"{os.cpu_count()} CPUs, load average {load_before:.2f} before the runs")
    print(f"  {'':22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}   every run, req/s")
    for name, run in best.items():
        every = "  ".join(f"{each.rate:,.0f}" for each in runs[name])
        non_2xx = sum(each.non_2xx for each in runs[name])
        print(f"  {name:22}{run.rate:9,.0f}{run.p50_ms:9.2f}{run.p99_ms:9.2f}{non_2xx:9}   {every}")
    ratio = best["flow"].rate / best["hand-written"].rate
    print(f"  {'flow / hand-written':22}{ratio:9.2f}   goal >= {GOAL}: {'met' if ratio >= GOAL else 'MISSED'}")


def stack() -> str:
    """What uvicorn picks by itself in this environment: the figures depend on it."""
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http}, {loop}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="length of the warm-up run on each server")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per server (the best counts)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--app", type=Path, default=ROOT, help="the app folder (default: the reference app)")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if 1 + 2 * (options.runs + 1) > SPACE // BLOCK:
        raise SystemExit(f"at most {(SPACE // BLOCK - 1) // 2 - 1} runs: each one needs its own block of numbers")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-http-") as directory:
        folder = Path(directory)
        script = folder / "set-phone.lua"
        script.write_text(lua_script())
        with servers(raised_copy(options.app.resolve(), folder), folder) as (flow, hand):
            token = session_token(flow)
            check_same_work(flow, hand, token)
            check_same_logging(flow, hand)
            blocks = iter(range(1, SPACE // BLOCK))  # block 0: the checks above
            for server in (flow, hand):
                block = next(blocks)
                warmup = load(server, script, block, token, options, options.warmup)
                refuse_errors(server, warmup, token)
                check_texted(server, block, warmup, options.connections)
            runs: dict[str, list[Run]] = {"hand-written": [], "flow": []}
            for round_ in range(options.runs):
                order = (flow, hand) if round_ % 2 == 0 else (hand, flow)
                for server in order:
                    run = load(server, script, next(blocks), token, options, options.seconds)
                    refuse_errors(server, run, token)
                    runs[server.name].append(run)
                    print(f"round {round_ + 1}: {server.name} {run.rate:,.0f} req/s", file=sys.stderr)
    report(options, runs, load_before)


if __name__ == "__main__":
    main()
