"""Models: compiling YAML model files, their JSON Schemas, validation and merging."""

from __future__ import annotations

import re

import jsonschema
import pytest

from flowengine.errors import ValidationFailed
from flowengine.models import FILE_SCHEMA, Encrypted, Sealed, Secret, compile_models, hash_secret, merge
from flowengine.spec.yamlfile import loads

USERS = """\
description: People who can sign in.
fields:
  email:         { type: email, required: true, unique: true }
  name:          { type: text, length: { min: 1, max: 20 } }
  age:           { type: integer, min: 0, max: 150 }
  score:         { type: decimal }
  role:          { type: text, enum: [admin, member], default: member }
  twoFactorAuth: { type: boolean, default: false }
  joinedOn:      { type: datetime, default: { expression: NOW() } }
  birthday:      date
  phone:         phone
  password:      { type: encrypted, length: { min: 8 } }
  referrer:      { type: reference, model: users }
  tags:          { type: list, items: text, length: { max: 3 } }
  address:       { type: object, fields: { city: text, zip: { type: text, pattern: "^[0-9]{5}$" } } }
  phones:        { type: list, items: { type: object, fields: { number: { type: phone, required: true } } } }
  nickname:      { type: text, readonly: true, private: true, description: shown to friends }
  totpSecret:    secret
"""

CODE = """\
transient: true
fields:
  code: { type: integer, required: true }
  userId: { type: reference, model: users }
  phoneNumber: text
"""


def compile_texts(**files: str):
    documents = [loads(text, f"models/{name}.yaml") for name, text in files.items()]
    return compile_models((name, d.data, d.where) for name, d in zip(files, documents))


@pytest.fixture
def users():
    models, problems = compile_texts(users=USERS, phoneVerificationCode=CODE)
    assert problems == []
    return models["users"]


def fields_of(error: ValidationFailed) -> list[str]:
    return [item["details"]["field"] for item in error.items]


def test_a_model_compiles_with_its_fields(users):
    assert users.name == "users" and not users.transient
    assert users.fields["email"].unique and users.fields["email"].required
    assert users.fields["tags"].items.type == "text"
    assert users.fields["address"].fields["zip"].pattern == "^[0-9]{5}$"
    assert users.fields["nickname"].readonly and users.fields["nickname"].private
    assert users.encrypted == ("password",) and users.hidden == ("password", "totpSecret")


def test_transient_model():
    models, problems = compile_texts(users=USERS, phoneVerificationCode=CODE)
    assert problems == [] and models["phoneVerificationCode"].transient


def test_validation_applies_defaults_and_normalises(users):
    clean = users.validate({"email": "Ann@Example.COM", "phone": "+1 415 555 0100", "birthday": "2000-02-29",
                            "phones": [{"number": "+44 20 7946 0958"}], "score": 3})  # fmt: skip
    assert clean["email"] == "ann@example.com"
    assert clean["phone"] == "+14155550100"
    assert clean["phones"] == [{"number": "+442079460958"}]
    assert clean["role"] == "member" and clean["twoFactorAuth"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", clean["joinedOn"])
    assert clean["score"] == 3.0 and isinstance(clean["score"], float)


def test_datetimes_are_stored_in_utc(users):
    models, _ = compile_texts(events="fields: { at: datetime }")
    assert models["events"].validate({"at": "2026-01-02T03:04:05+02:00"})["at"] == "2026-01-02T01:04:05.000Z"


@pytest.mark.parametrize(
    "values, field, message",
    [
        ({"email": "nope"}, "email", "field 'email' must be a valid email address"),
        ({}, "email", "field 'email' is required"),
        ({"email": None}, "email", "field 'email' is required"),
        ({"email": "a@b.co", "age": "ten"}, "age", "field 'age' must be an integer"),
        ({"email": "a@b.co", "age": -1}, "age", "field 'age' must be at least 0"),
        ({"email": "a@b.co", "name": ""}, "name", "field 'name' must be at least 1 characters long"),
        ({"email": "a@b.co", "role": "boss"}, "role", "field 'role' must be one of admin, member"),
        ({"email": "a@b.co", "address": {"zip": "1"}}, "address.zip", "field 'address.zip' does not match the pattern ^[0-9]{5}$"),
        ({"email": "a@b.co", "tags": ["a", "b", "c", "d"]}, "tags", "field 'tags' must have at most 3 items"),
        ({"email": "a@b.co", "tags": [1]}, "tags.0", "field 'tags.0' must be text"),
        ({"email": "a@b.co", "phones": [{}]}, "phones.0.number", "field 'phones.0.number' is required"),
        ({"email": "a@b.co", "phone": "555"}, "phone", "field 'phone' must be a phone number in international form, like +14155550100"),
        ({"email": "a@b.co", "birthday": "2001-02-29"}, "birthday", "field 'birthday' must be a date like 2026-11-26"),
        ({"email": "a@b.co", "nick": "x"}, "nick", "'nick' is not a field of users"),
        ({"email": "a@b.co", "twoFactorAuth": "yes"}, "twoFactorAuth", "field 'twoFactorAuth' must be true or false"),
        ({"email": "a@b.co", "password": "short"}, "password", "field 'password' must be at least 8 characters long"),
        ({"email": "a@b.co", "password": "x" * 129}, "password", "field 'password' must be at most 128 characters long"),
    ],
)  # fmt: skip
def test_each_bad_field_is_named(users, values, field, message):
    with pytest.raises(ValidationFailed) as caught:
        users.validate(values)
    assert [item["message"] for item in caught.value.items] == [message]
    assert caught.value.items[0]["details"] == {"field": field, "model": "users"}
    assert caught.value.status == 400 and caught.value.items[0]["code"] == "validation_error"


def test_every_bad_field_is_reported_at_once(users):
    with pytest.raises(ValidationFailed) as caught:
        users.validate({"email": "x", "age": -5, "extra": 1, "role": "x"})
    assert sorted(fields_of(caught.value)) == ["age", "email", "extra", "role"]


def test_partial_validation_checks_only_given_fields(users):
    assert users.validate({"age": 3}, partial=True) == {"age": 3}
    assert users.validate({"name": None}, partial=True) == {"name": None}
    with pytest.raises(ValidationFailed) as caught:
        users.validate({"email": None}, partial=True)
    assert fields_of(caught.value) == ["email"]


def test_validate_input_applies_no_defaults():
    models, _ = compile_texts(users=USERS, phoneVerificationCode=CODE)
    model = models["phoneVerificationCode"]
    assert model.validate_input({"code": 123456, "phoneNumber": "+1"}) == {"code": 123456, "phoneNumber": "+1"}
    with pytest.raises(ValidationFailed):
        model.validate_input({"phoneNumber": "+1"})


def test_json_schema_is_valid_and_describes_the_fields(users):
    schema = users.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["email"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["age"] == {"type": "integer", "minimum": 0, "maximum": 150}
    assert schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}, "maxItems": 3}
    assert schema["properties"]["referrer"]["x-model"] == "users"
    assert schema["properties"]["nickname"]["readOnly"] is True


def test_output_schema_has_system_fields_and_hides_encrypted(users):
    schema = users.output_schema()
    assert list(schema["properties"])[:3] == ["_id", "createdAt", "updatedAt"]
    assert "password" not in schema["properties"] and "totpSecret" not in schema["properties"]
    assert schema["required"] == ["_id", "createdAt", "updatedAt"]


def test_file_schema_is_a_valid_schema():
    jsonschema.Draft202012Validator.check_schema(FILE_SCHEMA)


@pytest.mark.parametrize(
    "text, where, message",
    [
        ("fields: { a: { type: texte } }", "models/m.yaml:1:11", "has the wrong shape"),
        ("fields: { a: { type: text, min: 1 } }", "models/m.yaml:1:28", "'min' does not apply to a field of type text"),
        ("fields: { a: { type: integer, length: { max: 2 } } }", "models/m.yaml:1:31", "'length' does not apply"),
        ("fields: { a: { type: reference } }", "models/m.yaml:1:11", "a field of type reference needs 'model'"),
        ("fields: { a: { type: reference, model: nobody } }", "models/m.yaml:1:33", "unknown model 'nobody'"),
        ("fields: { a: { type: list } }", "models/m.yaml:1:11", "a field of type list needs 'items'"),
        ("fields: { a: { type: integer, min: 5, max: 1 } }", "models/m.yaml:1:31", "the minimum 5 is above the maximum 1"),
        ("fields: { a: { type: text, pattern: '(' } }", "models/m.yaml:1:28", "pattern is not a valid regular expression"),
        ("fields: { a: { type: integer, default: x } }", "models/m.yaml:1:31", "default 'x' is not valid: must be an integer"),
        ("fields: { a: { type: text, enum: [a, 1] } }", "models/m.yaml:1:38", "enum value 1 is not a valid text"),
        ("fields: { a: { type: datetime, default: { expression: 'NOW(' } } }", "models/m.yaml:1:32", "default: syntax error"),
        ("fields: { a: { type: text, default: { expression: params.x } } }", "models/m.yaml:1:28", "unknown name 'params'"),
        ("fields: { _id: text }", "models/m.yaml:1:11", "'_id'"),
        ("fields: { a: { type: list, items: encrypted } }", "models/m.yaml:1:28", "encrypted fields must be top-level fields"),
        ("fields: { a: { type: object, fields: { s: secret } } }", "models/m.yaml:1:40", "secret fields must be top-level fields"),
        ("fields: { a: { type: secret, unique: true } }", "models/m.yaml:1:30", "'unique' does not apply to a field of type secret"),
        ("fields: { a: { type: secret, enum: [x] } }", "models/m.yaml:1:30", "'enum' does not apply to a field of type secret"),
        ("fields: { a: { type: secret, default: x } }", "models/m.yaml:1:30", "secret fields cannot have a literal default"),
        ("fields: { a: { type: list, items: text, unique: true } }", "models/m.yaml:1:41", "'unique' does not apply"),
        ("transient: true\nfields: { a: { type: text, unique: true } }", "models/m.yaml:2:11", "a transient model is never stored"),
        ("name: other\nfields: { a: text }", "models/m.yaml:1:1", "the model is named 'other' but its file is 'm'"),
        ("fields: { a: { type: reference, model: code } }", "models/m.yaml:1:33", "'code' is transient"),
    ],
)  # fmt: skip
def test_model_file_problems_have_a_location(text, where, message):
    _, problems = compile_texts(m=text, code=CODE.replace("model: users", "model: m"))
    assert len(problems) == 1, problems
    assert str(problems[0].where) == where
    assert message in problems[0].message


def test_all_problems_of_a_file_are_reported_at_once():
    _, problems = compile_texts(m="fields: { a: { type: text, min: 1 }, b: { type: list }, c: { type: reference } }")
    assert len(problems) == 3


def test_merge_extends_a_model():
    base = {"fields": {"email": {"type": "email", "required": True}, "name": "text"}}
    extension = {"description": "app users", "fields": {"twoFactorAuth": {"type": "boolean", "default": False},
                                                       "name": {"length": {"max": 40}}}}  # fmt: skip
    merged = merge(base, extension)
    assert merged["description"] == "app users"
    assert merged["fields"]["name"] == {"type": "text", "length": {"max": 40}}
    assert merged["fields"]["twoFactorAuth"] == {"type": "boolean", "default": False}
    assert merged["fields"]["email"] == {"type": "email", "required": True}


def test_merge_refuses_to_change_a_type():
    with pytest.raises(ValueError, match="field 'email' is a email field and cannot become a text field"):
        merge({"fields": {"email": "email"}}, {"fields": {"email": {"type": "text"}}})


def test_a_secret_is_text_as_written_and_sealed_when_read():
    models, problems = compile_texts(m="fields: { s: { type: secret, length: { max: 5 } } }")
    assert problems == [] and models["m"].validate({"s": "v1.ab"}) == {"s": "v1.ab"}
    with pytest.raises(ValidationFailed):
        models["m"].validate({"s": 42})
    sealed = Secret("v1.ab")
    assert str(sealed) == repr(sealed) == "<secret>" and sealed.reveal() == "v1.ab"
    assert isinstance(sealed, Sealed) and isinstance(Encrypted("x"), Sealed)


def test_encrypted_is_sealed():
    sealed = Encrypted(hash_secret("correct horse", rounds=4))
    assert str(sealed) == repr(sealed) == "<encrypted>"
    assert sealed.matches("correct horse") and not sealed.matches("wrong")
    assert not sealed.matches(None) and not sealed.matches("x" * 100)
