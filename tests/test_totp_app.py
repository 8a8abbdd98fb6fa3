"""examples/totp-app: ``flowengine check`` and ``flowengine test`` pass on it, and over HTTP a
user enrols an authenticator app, confirms it, and signs in with password and code, once."""

from __future__ import annotations

import base64
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import app_client

from flowengine.cli import main
from flowengine.totp import STEP, totp

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).parent.parent / "examples" / "totp-app"
AUTH = "/_api/rest/v1/auth"
PASSWORD = "a long enough passphrase"


def test_the_example_checks_and_its_flow_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLE)]) == 0
    assert main(["test", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "ok: 4 flows, 4 endpoints, 1 models" in out and "13 passed, 0 failed" in out


def code_of(secret: str, steps_ahead: int = 0) -> str:
    return totp(base64.b32decode(secret), time.time() + steps_ahead * STEP)


async def sign_in(http: httpx.AsyncClient, email: str) -> str:
    answer = await http.post("/sign-in", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"challengeId"}  # no session before the code
    return answer.json()["challengeId"]


async def test_enrol_confirm_and_sign_in_with_a_code_that_works_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("APP_SECRET", "s" * 32)
    app_dir = shutil.copytree(EXAMPLE, tmp_path / "app", ignore=shutil.ignore_patterns("tests"))
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    async with app_client(app_dir) as http:
        signed_up = await http.post(f"{AUTH}/signup-email", json={"email": email, "password": PASSWORD})
        assert signed_up.status_code == 200, signed_up.text
        session = {"Session": signed_up.json()["session"]["token"]}
        user_id = signed_up.json()["user"]["_id"]
        # Enrol: a secret to scan, then the first code the app shows stores it, sealed.
        made = await http.post("/totp/enrol", headers=session)
        assert made.status_code == 200, made.text
        secret = made.json()["secret"]
        assert made.json()["uri"].startswith("otpauth://totp/TOTP%20demo:")
        confirmed = await http.post("/totp/confirm", json={"code": code_of(secret)}, headers=session)
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["totpEnabled"] is True and "totpSecret" not in confirmed.json()
        me = await http.get(f"{AUTH}/user", headers=session)
        assert me.json()["totpEnabled"] is True and "totpSecret" not in me.json() and "password" not in me.json()
        # The built-in password sign-in now refuses: the app's two steps are the way in.
        direct = await http.post(f"{AUTH}/signin-email", json={"email": email, "password": PASSWORD})
        assert direct.status_code == 403 and direct.json()["errors"][0]["code"] == "second_factor_required"
        # Sign in: password, then the next code (the confirming one is used up).
        challenge = await sign_in(http, email)
        code = code_of(secret, steps_ahead=1)
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        refused = await http.post("/sign-in/verify", json={"challengeId": challenge, "code": wrong})
        assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == "invalid_code"
        done = await http.post("/sign-in/verify", json={"challengeId": challenge, "code": code})
        assert done.status_code == 200, done.text
        assert done.json()["session"]["userId"] == user_id and "totpSecret" not in done.text
        # Replay: the used challenge has expired, and the same code on a new sign-in is refused.
        again = await http.post("/sign-in/verify", json={"challengeId": challenge, "code": code})
        assert again.status_code == 400 and again.json()["errors"][0]["code"] == "code_expired"
        replayed = await http.post("/sign-in/verify", json={"challengeId": await sign_in(http, email), "code": code})
        assert replayed.status_code == 400 and replayed.json()["errors"][0]["code"] == "invalid_code"
        # The data API can neither show nor change the factor.
        changed = await http.post("/_api/rest/v1/db/object/update", headers={"Session": done.json()["session"]["token"]},
                                  json={"model": "users", "id": user_id, "values": {"totpEnabled": False}})  # fmt: skip
        assert changed.status_code == 400 and changed.json()["errors"][0]["details"]["field"] == "totpEnabled"
