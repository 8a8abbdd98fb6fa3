"""A node type shipped as a wheel: examples/flowengine-slugify, and every sample of docs/custom-nodes.md.

The example package is built into a wheel and installed with pip into a fresh virtual
environment that sees this environment's packages (flowengine and its dependencies) but
not the wheel's source. The demo app using ``type: slugify`` is refused there before the
install and runs after it, in subprocesses of that environment: the entry-point path, from a
wheel, end to end. The doc's commands are the ones run; its files are the package's files.
"""

from __future__ import annotations

import re
import shlex
import shutil
import site
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
DOC = REPO / "docs" / "custom-nodes.md"
EXAMPLE = "examples/flowengine-slugify"

_BLOCK = re.compile(
    r"(?:^<!-- (?P<marker>[a-z]+)(?::\s*(?P<arg>[^>]*?))? -->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```$",
    re.DOTALL | re.MULTILINE,
)


@dataclass
class Block:
    marker: str | None
    arg: str | None
    lang: str
    body: str


def doc_blocks() -> list[Block]:
    return [Block(m["marker"], m["arg"], m["lang"], m["body"]) for m in _BLOCK.finditer(DOC.read_text())]


@dataclass
class Shipped:
    """What happened when the doc's commands ran in a fresh environment."""

    python: Path
    package: Path
    before: subprocess.CompletedProcess[str]
    outputs: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        # -P: the current folder is not importable, as with the installed console script.
        return _run([str(self.python), "-P", *args], cwd or self.package)


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def _fresh_environment(folder: Path) -> Path:
    """A venv without pip whose interpreter also sees this environment's site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=60)
    python = folder / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], folder)
    outer = "".join(f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages())
    (Path(purelib.stdout.strip()) / "_outer_environment.pth").write_text(outer)
    return python


def _command(line: str, python: Path) -> list[list[str]]:
    """A doc command as run here: pip and flowengine of the fresh environment; wheel builds offline first."""
    words = shlex.split(line)
    if words[:2] == ["pip", "wheel"]:
        isolated = [sys.executable, "-m", "pip", *words[1:]]
        return [[*isolated[:4], "--no-build-isolation", *isolated[4:]], isolated]  # second: if the first fails
    if words[:2] == ["pip", "install"]:
        return [[sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", *words[2:]]]
    if words[0] == "flowengine":
        return [[str(python), "-P", "-m", "flowengine.cli", *words[1:]]]
    raise AssertionError(f"the doc runs a command this test does not know: {line}")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Shipped:
    root = tmp_path_factory.mktemp("ship")
    repo = root / "repo"
    ignore = shutil.ignore_patterns("dist", "build", "*.egg-info", "__pycache__")
    shutil.copytree(REPO / EXAMPLE, repo / EXAMPLE, ignore=ignore)
    python = _fresh_environment(root / "venv")
    package = repo / EXAMPLE
    result = Shipped(python, package, before=_run([str(python), "-P", "-m", "flowengine.cli", "check", "demo"], package))
    [commands] = [block.body for block in doc_blocks() if block.marker == "run"]
    cwd = repo
    for line in commands.splitlines():
        if line.startswith("cd "):
            cwd = cwd / line[3:].strip()
            continue
        for attempt in _command(line, python):
            ran = _run(attempt, cwd)
            if ran.returncode == 0:
                break
        assert ran.returncode == 0, f"{line}\n{ran.stdout}\n{ran.stderr}"
        result.outputs[" ".join(shlex.split(line)[:2])] = ran.stdout
    return result


def test_without_the_package_the_app_is_refused_naming_the_missing_type(shipped):
    assert shipped.before.returncode == 1
    assert "flows/slug.yaml:11:5: node 'slug': unknown node type 'slugify' (known types: " in shipped.before.stderr


def test_with_the_wheel_installed_the_entry_point_registers_the_node_type(shipped):
    where = shipped.run("-c", "import flowengine_slugify; print(flowengine_slugify.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(shipped.python.parent.parent)  # the venv, not the source
    assert shipped.run("-m", "flowengine.cli", "check", "demo").stdout.startswith("ok: 1 flows, 1 endpoints")


def test_the_flow_using_the_node_runs(shipped):
    assert shipped.outputs["flowengine run"].startswith('status: 200\n{\n  "slug": "hello-world"\n}\n')


def test_the_demo_apps_flow_tests_pass(shipped):
    assert shipped.outputs["flowengine test"].endswith("3 passed, 0 failed\n")


def test_the_packages_own_tests_pass_with_the_node_harness(shipped):
    result = shipped.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout


# --- the doc -----------------------------------------------------------------------------


def test_every_sample_in_the_doc_is_exercised():
    blocks = doc_blocks()
    assert len(blocks) >= 8
    assert {block.marker for block in blocks} <= {"file", "run", "output", "exec"}, [b.body[:60] for b in blocks if b.marker is None]


@pytest.mark.parametrize("block", [b for b in doc_blocks() if b.marker == "file"], ids=lambda b: b.arg)
def test_a_file_shown_in_the_doc_is_the_file_in_the_example(block):
    assert block.body == (REPO / block.arg).read_text()


@pytest.mark.parametrize("block", [b for b in doc_blocks() if b.marker == "output"], ids=lambda b: b.arg)
def test_an_output_shown_in_the_doc_is_what_the_command_printed(shipped, block):
    assert shipped.outputs[block.arg].startswith(block.body)


@pytest.mark.parametrize("block", [b for b in doc_blocks() if b.marker == "exec"], ids=lambda b: b.body.splitlines()[-1][:40])
def test_a_python_sample_in_the_doc_runs(shipped, block):
    result = shipped.run("-c", textwrap.dedent(block.body))
    assert result.returncode == 0, result.stderr


def test_the_doc_names_the_error_a_missing_package_gives(shipped):
    line = shipped.before.stderr.splitlines()[0]
    quoted = line.split(" (known types:")[0]
    assert f"`{quoted} (known types: ...)`" in DOC.read_text()


@pytest.fixture(autouse=True)
def _no_stray_builds():
    """The example folder in the repository stays clean: builds happen in a copy."""
    yield
    leftovers = [p.name for p in (REPO / EXAMPLE).iterdir() if p.name in ("dist", "build") or p.suffix == ".egg-info"]
    assert not leftovers, leftovers
