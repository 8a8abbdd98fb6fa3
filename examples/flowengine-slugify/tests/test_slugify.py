"""The slugify node, run through flowengine's node harness."""

import asyncio

import pytest

from flowengine.errors import FlowError
from flowengine.testing import harness_services, run_node


def slugify(**params):
    return asyncio.run(run_node("slugify", params))


def test_a_title_becomes_a_slug():
    assert slugify(text="Héllo, Wörld!") == ("next", "hello-world")


def test_params_are_written_as_in_a_flow_file():
    scope = {"params": {"body": {"title": "Ünïcode Tïtle"}}}
    result = asyncio.run(run_node("slugify", {"text": "{{ params.body.title }}", "separator": "_"}, scope=scope))
    assert result == ("next", "unicode_title")


def test_a_long_slug_is_cut_at_max_length():
    assert slugify(text="one two three", max_length=7) == ("next", "one-two")


def test_text_without_letters_or_digits_takes_the_error_output():
    with pytest.raises(FlowError) as caught:
        slugify(text="!!!")
    assert (caught.value.code, caught.value.status) == ("empty_slug", 400)


def test_unique_slugs_are_numbered_in_the_apps_cache():
    services = harness_services()

    async def twice():
        params = {"text": "Hello", "unique": True}
        return [await run_node("slugify", params, services=services) for _ in range(2)]

    assert asyncio.run(twice()) == [("next", "hello"), ("next", "hello-2")]
