"""Issue #8: the tutorials' profile photo, end to end with the real auth and data API.

``tests/apps/profile_photo`` (built-in auth with email confirmation, a public
``profilePictures`` bucket for images) is copied to a temporary folder and built as the
server builds it (``runtime.build(folder, dev=True)``, its lifespan run around the test).
The user signs up, opens the link from the dev email outbox and signs in with the password;
then, as ``ProfilePhoto.js`` and ``userContext.js`` do: upload ``"photo" + _id``, read it
back from ``publicPath``, set it as ``profilePicture`` through the data API, unset it with
``updateFields``, delete the file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
from test_storage import png
from test_storage_api import DELETE, errors_of, upload
from two_factor_harness import AUTH, CLIENT, PASSWORD, TwoFactorApp, User

from flowengine.runtime import build

pytestmark = pytest.mark.anyio

APP = Path(__file__).parent / "apps" / "profile_photo"
UPDATE_FIELDS = "/_api/rest/v1/db/object/update-fields"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[TwoFactorApp]:
    """The served copy, driven through the two-factor harness's auth helpers (it sends no SMS)."""
    asgi = build(shutil.copytree(APP, tmp_path / "app"), dev=True)
    asgi.state.services.auth.passwords.cost = 4  # bcrypt's lowest: tests sign up fast (app.yaml may not go below 10)
    async with asgi.router.lifespan_context(asgi):
        transport = httpx.ASGITransport(app=asgi, client=CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield TwoFactorApp(asgi, http, twilio=None, clock=None)  # type: ignore[arg-type]


async def signed_in(app: TwoFactorApp, tag: str) -> User:
    """Sign up, confirm the address with the emailed link, then sign in with the password."""
    confirmed = await app.verified_user(tag)
    response = await app.call("POST", f"{AUTH}/signin-email", json={"email": confirmed.email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["user"]["_id"] == confirmed.id and answer["user"]["emailVerified"] is True
    return User(confirmed.email, confirmed.id, answer["session"]["token"])


async def test_a_profile_photo_from_upload_to_deletion(app: TwoFactorApp) -> None:
    ada = await signed_in(app, "ada")
    image = png(4, 3)

    uploaded = await upload(app.http, name=f"photo{ada.id}", content=image, session=ada.token)
    assert uploaded.status_code == 200, uploaded.text
    record = uploaded.json()
    public_path = record["publicPath"]
    assert public_path == f"http://testserver/_storage/profilePictures/photo{ada.id}"
    assert (record["mimeType"], record["size"], record["uploadedBy"]) == ("image/png", len(image), ada.id)

    served = await app.http.get(public_path)  # public: no session needed
    assert served.status_code == 200
    assert served.content == image and served.headers["content-type"] == "image/png"

    updated = await app.update_user(ada, {"profilePicture": public_path})
    assert updated.status_code == 200, updated.text
    assert updated.json()["profilePicture"] == public_path
    me = await app.me(ada)
    assert me.status_code == 200 and me.json()["profilePicture"] == public_path

    body = {"updates": [{"field": "profilePicture", "updateType": "unset"}],
            "options": {"cache": "nocache", "returnTop": False}, "id": ada.id, "model": "users"}  # fmt: skip
    unset = await app.call("POST", UPDATE_FIELDS, user=ada, json=body)
    assert unset.status_code == 200, unset.text
    assert unset.json().get("profilePicture") is None
    assert (await app.me(ada)).json().get("profilePicture") is None

    bob = await signed_in(app, "bob")
    refused = await app.call("POST", DELETE, user=bob, json={"fileUrl": public_path})
    assert refused.status_code == 403, refused.text
    assert (await app.http.get(public_path)).content == image

    deleted = await app.call("POST", DELETE, user=ada, json={"fileUrl": public_path})
    assert deleted.status_code == 200 and deleted.json() is None
    gone = await app.http.get(public_path)
    assert gone.status_code == 404 and errors_of(gone)[0]["code"] == "file_not_found"
