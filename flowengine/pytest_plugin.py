"""A pytest plugin that collects an app's flow tests, one pytest item per case.

Pytest collects ``flows/tests/*.yaml`` (and flow files with a ``tests:`` list) of an app
folder only when asked to: when the folder is one of pytest's arguments (``pytest my-app``,
or a path inside it), or named with ``--flowengine-app DIR``. App folders that merely sit
somewhere under a test tree (fixtures of a project's own tests) are left alone, so the
plugin never changes what a project's ordinary test run collects.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

_SUITES = pytest.StashKey[dict[Path, Any]]()
_ROOTS = pytest.StashKey[set[Path]]()
_HAS_TESTS = re.compile(r"^tests\s*:", re.MULTILINE)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flowengine")
    group.addoption(
        "--flowengine-app",
        action="append",
        default=[],
        metavar="DIR",
        help="collect the flow tests of the flowengine app in DIR (repeatable)",
    )


def pytest_configure(config: pytest.Config) -> None:
    apps = {Path(d).resolve() for d in config.getoption("flowengine_app")}
    config.stash[_ROOTS] = apps
    config.stash[_SUITES] = {}
    for app in sorted(apps):
        flows = app / "flows"
        if flows.is_dir() and not any(flows.is_relative_to(arg) for arg in _arguments(config)):
            config.args.append(str(flows))  # so that pytest walks it


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    root = _app_root(file_path)
    if root is None or not _asked_for(root, parent.config):
        return None
    if file_path.parent.name == "flows" and not _HAS_TESTS.search(file_path.read_text(encoding="utf-8", errors="replace")):
        return None
    return FlowTestFile.from_parent(parent, path=file_path, root=root)


def _app_root(path: Path) -> Path | None:
    """The app folder of a flow file or a flow-test file, else None."""
    if path.parent.name == "tests" and path.parent.parent.name == "flows":
        root = path.parents[2]
    elif path.parent.name == "flows":
        root = path.parents[1]
    else:
        return None
    return root.resolve() if (root / "app.yaml").is_file() else None


def _asked_for(root: Path, config: pytest.Config) -> bool:
    return root in config.stash[_ROOTS] or any(arg.is_relative_to(root) for arg in _arguments(config))


def _arguments(config: pytest.Config) -> list[Path]:
    """The paths pytest was given (or took from ``testpaths``), without ``::test`` selectors."""
    base = config.invocation_params.dir
    return [(base / str(arg).split("::")[0]).resolve() for arg in config.args]


class FlowTestFile(pytest.File):
    """One test file (or flow file with ``tests:``): its cases."""

    def __init__(self, *, root: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root

    def collect(self) -> Iterator[pytest.Item]:
        from flowengine.errors import SpecErrors

        suites = self.config.stash[_SUITES]
        if self.root not in suites:
            from flowengine.testing import load_suite

            try:
                suites[self.root] = load_suite(self.root, strict=False)
            except SpecErrors as exc:  # the app itself does not load: no file can run
                suites[self.root] = exc
        suite = suites[self.root]
        if isinstance(suite, SpecErrors):
            raise self.CollectError(str(suite))
        relative = self.path.relative_to(self.root).as_posix()
        mine = [problem for problem in suite.problems if problem.where.file == relative]
        if mine:
            raise self.CollectError(str(SpecErrors(mine)))
        for case in suite.cases:
            if case.where.file == relative:
                yield FlowTestItem.from_parent(self, name=case.name, suite=suite, case=case)


class FlowTestItem(pytest.Item):
    """One case of a flow test."""

    def __init__(self, *, suite: Any, case: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.case = case

    def runtest(self) -> None:
        from flowengine.testing import run_case

        outcome = asyncio.run(run_case(self.suite, self.case))
        if not outcome.passed:
            raise CaseFailed(outcome)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CaseFailed):
            from flowengine.testing import describe

            return describe(excinfo.value.outcome)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.where.line - 1, f"{self.case.flow}: {self.name}"


class CaseFailed(Exception):
    def __init__(self, outcome: Any) -> None:
        super().__init__(outcome.case.name)
        self.outcome = outcome
