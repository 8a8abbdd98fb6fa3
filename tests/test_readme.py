"""The README is code too: every example in it runs here, and its tables match the engine."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from starlette.testclient import TestClient

from flowengine.cli import _parser, main
from flowengine.drawing import mermaid
from flowengine.registry import Registry
from flowengine.runtime import build
from flowengine.spec.app import load_app

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def block_after(marker: str, text: str = README) -> str:
    """The fenced block that follows ``marker``."""
    rest = text[text.index(marker) :]
    match = re.search(r"```[a-z]*\n(.*?)```", rest, re.S)
    assert match, f"no code block after {marker!r}"
    return match.group(1)


def test_the_node_table_lists_exactly_the_installed_node_types():
    table = README[README.index("<!-- node types") : README.index("`flowengine schema flow` prints")]
    listed = re.findall(r"^\| `([a-z-]+)` \|", table, re.M)
    assert sorted(listed) == Registry.default().names()


def test_the_ten_line_flow_answers_as_shown(tmp_path):
    flow = block_after("## A flow in ten lines")
    assert len(flow.strip().splitlines()) <= 12
    (tmp_path / "flows").mkdir()
    (tmp_path / "app.yaml").write_text("name: example\n")
    (tmp_path / "flows" / "check-phone.yaml").write_text(flow)
    with TestClient(build(tmp_path)) as client:
        answer = client.get("/phone/check?phoneNumber=%2B14155552671")
    shown = re.search(r"\$ curl .*\n(\{.*\})\n", README).group(1)
    assert answer.text == shown


def test_the_custom_node_example_runs_in_an_app(tmp_path, capsys):
    (tmp_path / "flows").mkdir()
    (tmp_path / "shout.py").write_text(block_after("<!-- example"))
    (tmp_path / "app.yaml").write_text("name: shouting\nnode_modules: [shout]\n")
    (tmp_path / "flows" / "yell.yaml").write_text(
        "service: yell\nstart: loud\nnodes:\n"
        "  loud: {type: shout, text: '{{ params.query.text }}', next: done, error: quiet}\n"
        "  done: {type: return-success, body: {text: loud}}\n"
        "  quiet: {type: return-error, status: 400, message: '{{ error.message }}'}\n"
    )
    assert main(["run", "yell", str(tmp_path), "--query", "text=hi"]) == 0
    assert '"text": "HI"' in capsys.readouterr().out
    assert main(["run", "yell", str(tmp_path), "--query", "text="]) == 0
    assert "Nothing to shout" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["setPhone", "verifyPhone", "signIn", "verifySignIn"])
def test_the_drawn_flows_are_what_flowengine_graph_prints(name):
    app = load_app(REPO)
    assert block_after(f"<!-- graph: {name} -->") == mermaid(app.flows[name]) + "\n"


def test_every_command_in_the_command_list_exists():
    listed = re.findall(r"^flowengine (\w+)", block_after("### Command line"), re.M)
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert listed and set(listed) == set(commands)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def reference_server(tmp_path, monkeypatch):
    """The reference app (a copy, so its data stays in tmp) served in dev mode."""
    for name in ("REDIS_URL", "DATABASE_URL", "SMS_PROVIDER", "EMAIL_PROVIDER", "API_KEY", "PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    app_dir = tmp_path / "app"
    shutil.copytree(REPO / "models", app_dir / "models")
    shutil.copytree(REPO / "flows", app_dir / "flows")
    shutil.copy(REPO / "app.yaml", app_dir / "app.yaml")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build(app_dir, dev=True), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough uses curl")
def test_the_two_factor_walkthrough_runs_as_written(reference_server):
    script = block_after("<!-- walkthrough")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={"BASE": reference_server, "PATH": "/usr/bin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    final = done.stdout.strip().splitlines()[-1]
    assert '"session":{' in final and '"found":{' in final and '"twoFactorAuth":true' in final
    assert '"errors"' not in done.stdout
