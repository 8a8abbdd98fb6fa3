"""The benchmarks still run: CI has no wrk and no time for their figures, but a script that no
longer starts, or a baseline that no longer does the flow's work, must not wait for the next
person to measure."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script", ["auth", "cache", "store", "throughput"])
def test_every_benchmark_script_starts(script: str) -> None:
    done = subprocess.run([sys.executable, f"bench/{script}.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def test_the_throughput_baseline_does_the_flows_work() -> None:
    """What bench/throughput.py checks before timing: a user signs up and confirms the email by
    its link, and both servers answer set-phone alike (codes, 429s, refusals, logging)."""
    spec = importlib.util.spec_from_file_location("bench_throughput", ROOT / "bench" / "throughput.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up while the class is made
    spec.loader.exec_module(bench)
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        with bench.servers(bench.raised_copy(ROOT, folder), folder) as (flow, hand):
            token = bench.session_token(flow)
            bench.check_same_work(flow, hand, token)
            bench.check_same_logging(flow, hand)
