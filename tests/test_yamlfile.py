"""YAML with marks: plain data, the position of everything, and nothing but plain data."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowengine.errors import Location, SpecErrors
from flowengine.spec import yamlfile
from flowengine.spec.yamlfile import loads

FLOW = """\
service: hello
endpoints:
  - method: GET
    path: /hello
nodes:
  answer:
    type: return-success
    body: { greeting: "'hi'", count: 2 }
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecErrors) as raised:
        loads(text, "f.yaml")
    return [str(error) for error in raised.value.errors]


# --- data and marks ---------------------------------------------------------------------


def test_data_is_plain_dicts_lists_and_scalars() -> None:
    document = loads(FLOW, "flows/hello.yaml")

    assert document.data == {
        "service": "hello",
        "endpoints": [{"method": "GET", "path": "/hello"}],
        "nodes": {"answer": {"type": "return-success", "body": {"greeting": "'hi'", "count": 2}}},
    }
    assert type(document.data["nodes"]) is dict


def test_where_gives_the_position_of_a_key_or_item() -> None:
    document = loads(FLOW, "flows/hello.yaml")

    assert document.where("service") == Location("flows/hello.yaml", 1, 1)
    assert document.where("endpoints", 0) == Location("flows/hello.yaml", 3, 5)
    assert document.where("endpoints", 0, "path") == Location("flows/hello.yaml", 4, 5)
    assert document.where("nodes", "answer", "body", "count") == Location("flows/hello.yaml", 8, 31)


def test_value_where_gives_the_position_of_the_value() -> None:
    document = loads(FLOW, "flows/hello.yaml")

    assert str(document.value_where("service")) == "flows/hello.yaml:1:10"
    assert str(document.value_where("nodes", "answer", "body")) == "flows/hello.yaml:8:11"
    assert str(document.value_where("nodes", "answer", "body", "greeting")) == "flows/hello.yaml:8:23"


def test_an_unknown_path_falls_back_to_its_nearest_ancestor() -> None:
    document = loads(FLOW, "flows/hello.yaml")

    assert document.where("nodes", "answer", "missing", "deeper") == Location("flows/hello.yaml", 6, 3)
    assert document.value_where("nodes", "answer", "missing") == Location("flows/hello.yaml", 6, 3)
    assert document.where("nothing") == Location("flows/hello.yaml", 1, 1)


def test_an_empty_file_is_none() -> None:
    assert loads("# only a comment\n", "f.yaml").data is None
    assert loads("", "f.yaml").data is None


def test_merge_keys_are_plain_data() -> None:
    document = loads("base: &base {type: log, level: info}\nnote:\n  <<: *base\n  message: hi\n", "f.yaml")

    assert document.data["note"] == {"type": "log", "level": "info", "message": "hi"}


def test_load_reads_a_file_under_its_display_name(tmp_path: Path) -> None:
    path = tmp_path / "hello.yaml"
    path.write_text("service: hello\n")

    document = yamlfile.load(path, "flows/hello.yaml")

    assert (document.file, document.data) == ("flows/hello.yaml", {"service": "hello"})


def test_an_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))

    with pytest.raises(SpecErrors) as raised:
        yamlfile.load(path, "flows/latin1.yaml")

    [error] = raised.value.errors
    assert str(error).startswith("flows/latin1.yaml: cannot read the file: ")


# --- duplicate keys ---------------------------------------------------------------------


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    assert _problems("a: 1\nb: 2\na: 3\n") == ["f.yaml:3:1: duplicate key 'a' (already set at line 1)"]


def test_every_duplicate_key_is_reported_at_once() -> None:
    text = "nodes:\n  x:\n    type: log\n    type: set\n  x: {}\nservice: s\nservice: t\n"

    assert _problems(text) == [
        "f.yaml:4:5: duplicate key 'type' (already set at line 3)",
        "f.yaml:5:3: duplicate key 'x' (already set at line 2)",
        "f.yaml:7:1: duplicate key 'service' (already set at line 6)",
    ]


def test_a_key_must_be_a_plain_value() -> None:
    assert _problems("? [a, b]\n: 1\n") == ["f.yaml:1:3: a mapping key must be a plain value"]


# --- safe loading -----------------------------------------------------------------------

PLAIN = "app files hold plain data (text, numbers, true/false, lists, mappings)"


@pytest.mark.parametrize(
    ("text", "where", "tag"),
    [
        ("a: !!python/object:os.system {}\n", "1:4", "!!python/object:os.system"),
        ("a: !!python/name:os.system\n", "1:4", "!!python/name:os.system"),
        ("a:\n  - !!python/object/apply:os.system [ls]\n", "2:5", "!!python/object/apply:os.system"),
        ("!!python/object/new:dict {}\n", "1:1", "!!python/object/new:dict"),
        ("? !!python/name:os.system\n: 1\n", "1:3", "!!python/name:os.system"),
        ("a: !!set {x}\n", "1:4", "!!set"),
        ("a: !custom 1\n", "1:4", "!custom"),
    ],
)
def test_tags_beyond_plain_data_are_refused(text: str, where: str, tag: str) -> None:
    assert _problems(text) == [f"f.yaml:{where}: the tag '{tag}' is not allowed; {PLAIN}"]


def test_a_refused_tag_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"

    _problems(f"a: !!python/object/apply:os.mkdir ['{target}']\n")

    assert not target.exists()


def test_an_alias_inside_itself_is_refused() -> None:
    assert _problems("a: &x [1, *x]\n") == ["f.yaml:1:4: an alias refers to the value that contains it"]


def test_an_alias_bomb_is_refused() -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdef", "bcdefg"):
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")

    [problem] = _problems("\n".join(levels) + "\n")

    assert problem.endswith(f"the file expands to more than {yamlfile.MAX_VALUES} values (through aliases?)")


def test_a_repeated_alias_within_the_limit_is_fine() -> None:
    document = loads("one: &v {x: 1}\ntwo: *v\nthree: [*v, *v]\n", "f.yaml")

    assert document.data["three"] == [{"x": 1}, {"x": 1}]


# --- syntax errors, in a builder's words ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a:\n  b: { x: 1\n", "f.yaml:2:6: invalid YAML: this '{' is never closed with '}'"),
        ("a: [1, 2\n", "f.yaml:1:4: invalid YAML: this '[' is never closed with ']'"),
        ("a: [1, 2\nb: 3\n", "f.yaml:2:2: invalid YAML: expected ',' or ']' to continue the '[' opened at line 1, column 4"),
        ("a:\n    b: 1\n  c: 2\n", "f.yaml:3:3: invalid YAML: this line does not fit the block above it; check its indentation"),
        ("a:\n\tb: 1\n", "f.yaml:2:1: invalid YAML: a tab character; indent YAML with spaces only"),
        ("a: Error: bad\n", "f.yaml:1:9: invalid YAML: a ': ' inside a plain value; put the value in quotes"),
        ('a: "hello\nb: 2\n', "f.yaml:1:4: invalid YAML: this quoted text is never closed"),
        ("a: *nowhere\n", "f.yaml:1:4: invalid YAML: found undefined alias 'nowhere'"),
    ],
)
def test_syntax_errors_say_what_and_where(text: str, problem: str) -> None:
    assert _problems(text) == [problem]


def test_two_documents_in_one_file_are_refused() -> None:
    [problem] = _problems("a: 1\n---\nb: 2\n")

    assert problem.startswith("f.yaml:2:1: invalid YAML: ")
