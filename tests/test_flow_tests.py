"""flowengine.testing: YAML flow tests, their report, the node harness and the pytest plugin.

tests/apps/flowtests holds one passing case per feature (stubs, fixed functions, outboxes,
cache entries, sessions, stored data, a ``tests:`` list in a flow file); the failure reports
are pinned on copies with broken expectations, exactly as a builder would read them.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from flowengine.cli import main
from flowengine.errors import FlowError, SpecErrors
from flowengine.spec.app import load_app
from flowengine.testing import harness_services, load_suite, run_case, run_node, run_suite

pytestmark = pytest.mark.anyio

REPO = Path(__file__).parent.parent
APP = Path(__file__).parent / "apps" / "flowtests"


@pytest.fixture
def app_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "app"
    shutil.copytree(APP, copy)
    return copy


def add_tests(app: Path, text: str, name: str = "extra.yaml") -> None:
    (app / "flows" / "tests" / name).write_text(textwrap.dedent(text))


# --- running cases -----------------------------------------------------------------------


def test_the_reference_apps_flow_tests_pass(capsys):
    assert main(["test", str(REPO)]) == 0
    out = capsys.readouterr().out
    assert "flows/tests/check-phone.yaml (checkPhone)\n  PASS  a US mobile number can receive codes\n" in out
    assert "FAIL" not in out


async def test_every_case_of_the_feature_app_passes():
    suite = load_suite(APP)
    out = io.StringIO()
    assert await run_suite(suite, out)
    assert out.getvalue().endswith("\n12 passed, 0 failed\n")
    assert "flows/greet.yaml (greet)\n  PASS  greets by name\n" in out.getvalue()  # a flow file's tests: list


def test_flow_test_files_are_not_loaded_as_flows():
    app = load_app(APP)
    assert sorted(app.flows) == ["addNote", "greet", "sendCode", "verifyCode"]
    assert not any(name.startswith("flows/tests/") for name in app.documents)


async def test_a_fixed_function_result_holds_only_in_its_case():
    suite = load_suite(APP)
    fixed, = [c for c in suite.cases if c.name == "a mobile number gets a code by SMS"]
    assert (await run_case(suite, fixed)).passed
    unfixed = type(fixed)("random", fixed.flow, fixed.where, {**fixed.spec, "functions": {}, "expect": {"status": 200}})
    outcome = await run_case(suite, unfixed)
    assert outcome.passed
    assert outcome.body == {"sent": True}
    # The same flow loaded for serving calls the real function.
    from flowengine.functions import FUNCTIONS

    assert suite.app.flows["sendCode"].nodes["makeCode"].params[0][1].parts[0]._functions is not FUNCTIONS
    assert load_app(APP).flows["sendCode"].nodes["makeCode"].params[0][1].parts[0]._functions is FUNCTIONS


def test_a_broken_expectation_on_the_reference_app_fails_the_command(tmp_path, capsys):
    app = tmp_path / "reference"
    shutil.copytree(REPO / "flows", app / "flows")
    shutil.copytree(REPO / "models", app / "models")
    shutil.copy(REPO / "app.yaml", app / "app.yaml")
    add_tests(app, """\
        flow: checkPhone
        cases:
          - name: a landline taken for a mobile
            query: { phoneNumber: "+442071838750" }
            expect: { status: 200, body: { mobile: true }, path: [] }
        """)
    assert main(["test", str(app)]) == 1
    out = capsys.readouterr().out
    assert textwrap.dedent("""\
        flows/tests/extra.yaml (checkPhone)
          FAIL  a landline taken for a mobile  (flows/tests/extra.yaml:3)
                path: expected no node to run
                  expected: (nothing)
                  taken:    answer
                body.mobile: expected true, got false
        """) in out
    assert out.endswith(" passed, 1 failed\n")


def test_the_report_says_how_each_expectation_failed(app_copy, capsys):
    add_tests(app_copy, """\
        flow: sendCode
        cases:
          - name: wrong branch
            query: { phoneNumber: "+14155552671" }
            functions: { RANDBETWEEN: 123456 }
            expect:
              status: 400
              body: { sent: false, reason: x }
              path: [checkPhone, badPhone]
              sms: [{ body: "your code is 000000" }]
              cache: { "phone-code:+14155552671": null }
          - name: an unexpected failure
            query: { phoneNumber: "+14155552671" }
            stubs: { textCode: { error: { code: provider_down, message: Twilio is down, status: 503 } } }
            expect: { path: [checkPhone, makeCode, keepCode, textCode, done] }
          - name: rejected input
            expect: { path: [checkPhone], error: not_mobile }
          - name: no path expected
            query: { phoneNumber: "+442071838750" }
            expect: { status: 200 }
        """)
    assert main(["test", str(app_copy)]) == 1
    out = capsys.readouterr().out
    assert textwrap.dedent("""\
        flows/tests/extra.yaml (sendCode)
          FAIL  wrong branch  (flows/tests/extra.yaml:3)
                path: diverged at 'checkPhone': it took 'then' and went to 'makeCode', expected 'badPhone'
                  expected: checkPhone → badPhone
                  taken:    checkPhone → makeCode → keepCode → textCode → done
                status: expected 400, got 200
                body.sent: expected false, got true
                body.reason: expected "x", missing
                sms[0].body: expected "your code is 000000", got "Flow tests: your code is 123456"
                cache['phone-code:+14155552671']: expected null, got 123456
          FAIL  an unexpected failure  (flows/tests/extra.yaml:12)
                path: diverged at 'textCode': it failed (provider_down: Twilio is down) and went to 'smsFailed', expected 'done'
                  expected: checkPhone → makeCode → keepCode → textCode → done
                  taken:    checkPhone → makeCode → keepCode → textCode → smsFailed
          FAIL  rejected input  (flows/tests/extra.yaml:16)
                path: no node ran (validation_error: """) in out
    assert textwrap.dedent("""\
        'phoneNumber' is required), expected 'checkPhone' first
                  expected: checkPhone
                  taken:    (nothing)
                error: expected code 'not_mobile', got codes ['validation_error']
          FAIL  no path expected  (flows/tests/extra.yaml:18)
                status: expected 200, got 400 (not_mobile: Not a mobile phone number: +442071838750)
                path taken: checkPhone → badPhone
        """) in out


def test_problems_in_test_files_are_all_reported_with_file_and_line(app_copy, capsys):
    add_tests(app_copy, """\
        flow: sendCode
        cases:
          - name: bad
            stubs: { textCod: { value: 1 }, done: { value: 2 }, checkPhone: { output: maybe } }
            functions: { RANDBETWEN: 1 }
            expect:
              stauts: 200
              path: [checkPhone, nope]
          - name: nothing expected
            expect: {}
          - name: twice
            expect: { status: 200 }
          - name: twice
            expect: { status: 200 }
        """)
    add_tests(app_copy, "flow: sendCod\ncases: [{name: x, expect: {status: 200}}]\n", "other.yaml")
    assert main(["test", str(app_copy)]) == 1
    assert capsys.readouterr().err == textwrap.dedent("""\
        flows/tests/extra.yaml:4:14: stub for unknown node 'textCod' (did you mean 'textCode'?)
        flows/tests/extra.yaml:4:37: node 'done' (return-success) ends the run: stub it with an 'error', or not at all
        flows/tests/extra.yaml:4:57: node 'checkPhone' (condition) has no output 'maybe' (outputs: then, else)
        flows/tests/extra.yaml:5:18: unknown function 'RANDBETWEN' (did you mean 'RANDBETWEEN'?)
        flows/tests/extra.yaml:7:7: unknown key 'stauts' (did you mean 'status'?)
        flows/tests/extra.yaml:8:26: path: unknown node 'nope'
        flows/tests/extra.yaml:10:5: 'expect' must have at least 1 entry
        flows/tests/extra.yaml:13:11: a case named 'twice' comes earlier
        flows/tests/other.yaml:1:7: unknown service 'sendCod' (did you mean 'sendCode'?)
        Error: 9 problems found
        """)


def test_k_runs_only_the_cases_whose_name_contains_the_text(capsys):
    assert main(["test", str(APP), "-k", "LANDLINE"]) == 0
    out = capsys.readouterr().out
    assert "PASS  a landline is refused and nothing is sent" in out
    assert out.endswith("\n1 passed, 0 failed\n")


def test_an_app_without_flow_tests_says_so(tmp_path, capsys):
    (tmp_path / "app.yaml").write_text("name: empty\n")
    assert main(["test", str(tmp_path)]) == 0
    assert "no flow tests found" in capsys.readouterr().out


# --- stored data -------------------------------------------------------------------------

ACCOUNTS = {
    "models/accounts.yaml": """\
        fields:
          email: { type: email, required: true, unique: true }
          password: encrypted
          name: { type: text, length: { max: 20 } }
        rules:
          - { check: "this.name != 'root'", message: the name root is reserved, field: name }
        """,
    "models/memos.yaml": "fields:\n  author: { type: reference, model: accounts }\n",
    "models/drafts.yaml": "transient: true\nfields:\n  text: text\n",
    "flows/sign-in.yaml": """\
        service: signIn
        inputs:
          body: { email: { type: email, required: true }, password: { type: text, required: true } }
        start: findAccount
        nodes:
          findAccount:
            type: find-one
            model: accounts
            where: this.email == params.body.email
            encrypted: true
            found: check
            not_found: check
          check: { type: condition, if: "ECOMPARE(params.body.password, findAccount.password)", then: welcome, else: denied }
          welcome: { type: return-success, body: findAccount }
          denied: { type: return-error, status: 401, code: denied, message: Wrong email or password }
        """,
}


@pytest.fixture
def accounts_app(app_copy: Path) -> Path:
    """The feature app with accounts (unique email, encrypted password, a rule), memos that
    refer to them, a transient model, and a sign-in flow that checks the password."""
    for relative, text in ACCOUNTS.items():
        (app_copy / relative).write_text(textwrap.dedent(text))
    return app_copy


def test_seeded_objects_are_found_by_the_flow_and_their_passwords_hashed(accounts_app, capsys):
    add_tests(accounts_app, """\
        flow: signIn
        cases:
          - name: the right password of a seeded account
            data: { accounts: [{ _id: a1, email: Ada@Example.com, password: correct horse, name: Ada }] }
            body: { email: ada@example.com, password: correct horse }
            expect: { status: 200, body: { _id: a1, email: ada@example.com, name: Ada }, path: [findAccount, check, welcome] }
          - name: a wrong one
            data: { accounts: [{ email: ada@example.com, password: correct horse }] }
            body: { email: ada@example.com, password: wrong horse }
            expect: { status: 401, path: [findAccount, check, denied] }
        """)
    assert main(["test", str(accounts_app)]) == 0
    assert capsys.readouterr().out.endswith("\n14 passed, 0 failed\n")


def test_expected_data_names_the_object_and_field_that_differ(app_copy, capsys):
    add_tests(app_copy, """\
        flow: addNote
        cases:
          - name: other texts stored
            data: { notes: [{ _id: n1, text: buy milk }] }
            body: { text: call Ada }
            expect:
              data: { notes: [{ text: call Bob }, { _id: n1, text: buy bread }] }
          - name: a note more than expected
            body: { text: call Ada }
            expect: { data: { notes: [] }, path: [store, total, done] }
        """)
    assert main(["test", str(app_copy)]) == 1
    out = capsys.readouterr().out
    assert textwrap.dedent('''\
        flows/tests/extra.yaml (addNote)
          FAIL  other texts stored  (flows/tests/extra.yaml:3)
                data.notes[0].text: expected "call Bob", got "call Ada"
                data.notes[1].text: expected "buy bread", got "buy milk"
                path taken: store → total → done
          FAIL  a note more than expected  (flows/tests/extra.yaml:8)
                data.notes: expected 0 object(s), 1 stored: [{"_id": ''') in out
    assert out.endswith("12 passed, 2 failed\n")


def test_bad_seed_data_is_reported_with_file_line_and_the_models_own_words(accounts_app, capsys):
    add_tests(accounts_app, """\
        flow: signIn
        cases:
          - name: bad seeds
            data:
              account: [{ email: a@b.co }]
              drafts: [{ text: never stored }]
              accounts:
                - { _id: a1, email: ada@example.com }
                - { _id: a1, email: ADA@example.com }
                - { email: not-an-email, nam: Ada }
                - { email: bob@example.com, name: root }
                - { name: Eve }
                - { _id: "", email: eve@example.com }
              memos: [{ author: a1 }, { author: a9 }]
            expect:
              data: { acounts: [] }
        """)
    assert main(["test", str(accounts_app)]) == 1
    assert capsys.readouterr().err == textwrap.dedent("""\
        flows/tests/extra.yaml:5:7: data: unknown model 'account' (did you mean 'accounts'?)
        flows/tests/extra.yaml:6:7: data: model 'drafts' is transient: its objects are never stored
        flows/tests/extra.yaml:9:13: data: another accounts object already has this _id
        flows/tests/extra.yaml:9:22: data: another accounts object already has this email
        flows/tests/extra.yaml:10:13: data: field 'email' must be a valid email address
        flows/tests/extra.yaml:10:34: data: 'nam' is not a field of accounts
        flows/tests/extra.yaml:11:37: data: the name root is reserved
        flows/tests/extra.yaml:12:11: data: field 'email' is required
        flows/tests/extra.yaml:13:13: '_id' "" is not valid: expected non-blank text
        flows/tests/extra.yaml:14:33: data: field 'author' refers to a accounts object that does not exist (seed it before this one)
        flows/tests/extra.yaml:16:15: data: unknown model 'acounts' (did you mean 'accounts'?)
        Error: 11 problems found
        """)


# --- the node harness --------------------------------------------------------------------


async def test_run_node_compiles_params_as_yaml_and_runs_the_node():
    assert await run_node("condition", {"if": "params.body.age >= 18"}, scope={"params": {"body": {"age": 20}}}) == (
        "then",
        True,
    )
    assert await run_node("set", {"values": {"greeting": "'Hi ' + who.name"}}, scope={"who": {"name": "Ada"}}) == (
        "next",
        {"greeting": "Hi Ada"},
    )


async def test_run_node_uses_the_services_it_is_given():
    services = harness_services()
    await run_node("cache-set", {"key": "code:{{ 1 + 1 }}", "value": 42, "ttl": 60}, services=services)
    assert await services.cache.get("code:2") == 42
    await run_node("send-sms", {"to": "'+14155552671'", "body": "hello"}, services=services)
    [message] = await services.cache.items("outbox:sms")
    assert (message["to"], message["body"]) == ("+14155552671", "hello")


async def test_run_node_lets_a_node_error_through():
    with pytest.raises(FlowError) as caught:
        await run_node("send-sms", {"to": "''", "body": "hello"})
    assert caught.value.code == "invalid_recipient"


async def test_run_node_checks_params_like_a_flow_file():
    with pytest.raises(SpecErrors) as caught:
        await run_node("cache-set", {"key": "k", "ttl": 0, "valu": 1, "value": "missing.name"})
    assert [str(e) for e in caught.value.errors] == [
        "<cache-set>:3:1: node 'cache-set': 'ttl' must be at least 1, got 0",
        "<cache-set>:4:1: node 'cache-set': unknown key 'valu' (did you mean 'value'?)",
        "<cache-set>:5:8: node 'cache-set': param 'value': unknown name 'missing' (pass it in scope=)",
    ]


async def test_run_node_names_an_unknown_type():
    with pytest.raises(LookupError, match="unknown node type 'cache-sett' \\(did you mean 'cache-set'\\?\\)"):
        await run_node("cache-sett", {})


# --- the pytest plugin -------------------------------------------------------------------


def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    registered = entry_points(group="pytest11", name="flowengine")
    plugin = [] if registered else ["-p", "flowengine.pytest_plugin"]
    command = [sys.executable, "-m", "pytest", *plugin, "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_pytest_collects_the_cases_of_an_app_it_is_pointed_at(app_copy):
    add_tests(app_copy, """\
        flow: sendCode
        cases:
          - name: wrongly expected
            query: { phoneNumber: "+442071838750" }
            expect: { path: [checkPhone, makeCode] }
        """)
    result = _pytest(str(app_copy), "-rf", cwd=app_copy.parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 12 passed" in result.stdout
    assert "path: diverged at 'checkPhone': it took 'else' and went to 'badPhone', expected 'makeCode'" in result.stdout
    assert "FAILED app/flows/tests/extra.yaml::wrongly expected" in result.stdout


def test_pytest_leaves_apps_inside_a_test_tree_alone_unless_named(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(APP, project / "tests" / "apps" / "fixture")
    add_tests(project / "tests" / "apps" / "fixture", "flow: sendCode\ncases: [{name: broken, expect: {status: 599}}]\n")
    (project / "tests" / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    result = _pytest("tests", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    named = _pytest("tests", "--flowengine-app", "tests/apps/fixture", cwd=project)
    assert named.returncode == 1
    assert "1 failed, 13 passed" in named.stdout


def test_pytest_reports_a_broken_test_file_as_a_collection_error(app_copy):
    add_tests(app_copy, "flow: sendCode\ncases: [{name: x, expect: {stauts: 200}}]\n")
    result = _pytest(str(app_copy), cwd=app_copy.parent)
    assert result.returncode != 0
    assert "flows/tests/extra.yaml:2:28: unknown key 'stauts' (did you mean 'status'?)" in result.stdout
    assert "ERROR app/flows/tests/extra.yaml\n" in result.stdout
    assert "1 error" in result.stdout  # only the broken file, not its neighbours
