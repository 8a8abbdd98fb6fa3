"""``flowengine check`` as a builder meets it: every broken app in ``tests/broken/`` must be
reported with exactly the lines in its ``expected.txt`` (file:line:col, node, what is wrong),
then ``Error: N problems found``, and exit 1. A clean app prints ``ok`` and exits 0.

To add a case: make ``tests/broken/<case>/`` (``app.yaml`` + ``flows/*.yaml``, built-in node
types only) and write the lines you expect a builder to read into ``expected.txt``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowengine.cli import main

TESTS = Path(__file__).parent
BROKEN = TESTS / "broken"
CUSTOM_NODES = TESTS / "apps" / "custom_nodes"
CASES = sorted(path.name for path in BROKEN.iterdir() if path.is_dir())

CLEAN_APP = {
    "app.yaml": 'name: clean\nenv:\n  region: "${FLOWENGINE_TEST_REGION:-eu}"\n',
    "flows/hello.yaml": """\
service: hello
endpoints:
  - method: GET
    path: /hello/{name}
inputs:
  path:
    name: { type: text }
start: check
nodes:
  check:
    type: condition
    if: LEN(params.path.name) > 0
    then: answer
    else: refuse
  answer:
    type: return-success
    body:
      greeting: "'Hello ' + params.path.name + ' from ' + env.region"
  refuse:
    type: return-error
    status: 400
    message: "A name is needed"
""",
}


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus expects these unset, whatever the machine running the tests has."""
    monkeypatch.delenv("SECRET", raising=False)
    monkeypatch.delenv("FLOWENGINE_TEST_REGION", raising=False)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _summary(count: int) -> str:
    return f"Error: {count} problem{'' if count == 1 else 's'} found"


def _expected(case: str) -> list[str]:
    return (BROKEN / case / "expected.txt").read_text().splitlines()


def _position(line: str) -> tuple[str, int, int]:
    file, _, rest = line.partition(":")
    numbers = rest.split(":")[:2]
    if not all(n.isdigit() for n in numbers):
        return file, 0, 0
    return file, int(numbers[0]), int(numbers[1])


def test_the_corpus_covers_enough_cases() -> None:
    assert len(CASES) >= 35
    assert all((BROKEN / case / "expected.txt").is_file() for case in CASES)


@pytest.mark.parametrize("case", CASES)
def test_broken_app_is_reported_exactly(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    expected = _expected(case)
    assert expected, f"{case}/expected.txt is empty"

    code = main(["check", str(BROKEN / case)])

    out, err = capsys.readouterr()
    *problems, summary = err.splitlines()
    assert problems == expected
    assert summary == _summary(len(expected))
    assert code == 1
    assert out == ""


@pytest.mark.parametrize("case", CASES)
def test_problems_are_sorted_by_file_and_position(case: str) -> None:
    positions = [_position(line) for line in _expected(case)]
    assert positions == sorted(positions)


def test_problems_in_two_files_are_all_reported() -> None:
    files = {_position(line)[0] for line in _expected("multiple-problems")}
    assert files == {"flows/a-users.yaml", "flows/b-orders.yaml"}


def test_a_clean_app_prints_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = _write(tmp_path, CLEAN_APP)

    code = main(["check", str(app)])

    out, err = capsys.readouterr()
    assert (code, out, err) == (0, "ok: 1 flows, 1 endpoints, 0 models\n", "")


def test_a_set_variable_satisfies_its_reference(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SECRET", "s3cret")

    code = main(["check", str(BROKEN / "env-missing")])

    assert code == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_check_defaults_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_write(tmp_path, CLEAN_APP))

    assert main(["check"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_a_missing_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"

    code = main(["check", str(missing)])

    assert code == 1
    assert capsys.readouterr().err == f"Error: {missing} is not a folder\n"


@pytest.mark.parametrize("argv", [["check", "--strict"], ["check", "a", "b"], [], ["chek"]])
def test_a_wrong_command_line_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == 2
    assert "usage: flowengine" in capsys.readouterr().err


def _console_script(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``flowengine`` command, beside the interpreter running the tests."""
    script = Path(sys.executable).with_name("flowengine")
    environ = {k: v for k, v in os.environ.items() if k != "SECRET"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=environ, timeout=60)


def test_the_console_script_reports_problems() -> None:
    done = _console_script("check", str(BROKEN / "multiple-problems"))

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [*_expected("multiple-problems"), _summary(5)]


def test_the_console_script_passes_a_clean_app() -> None:
    done = _console_script("check", str(CUSTOM_NODES))

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "ok: 1 flows, 1 endpoints, 0 models\n"
