"""MLflow's scoring protocol as the gateway reads it: one parse per request, refusals named."""

from __future__ import annotations

import json

import pytest

from mnist_mlops.serve.gateway.errors import BadRequest
from mnist_mlops.serve.gateway.protocol import MAX_JSON_DEPTH, parse, predictions_of

SPLIT = {"dataframe_split": {"columns": ["image"], "data": [["aGk="], ["aGk="]]}}


def test_a_plain_dataframe_split_may_join_a_batch_with_its_columns_and_rows():
    request = parse(json.dumps(SPLIT).encode(), "application/json")
    assert request.mergeable and request.columns == ("image",) and len(request.rows) == 2


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {**SPLIT["dataframe_split"], "index": [0, 1]}},
        {**SPLIT, "params": {"on_error": "row"}},
        {"dataframe_records": [{"image": "aGk="}]},
        {"instances": [{"image": "aGk="}]},
        {"dataframe_split": {"columns": ["image"], "data": []}},
        [1, 2, 3],
    ],
)
def test_other_requests_go_on_their_own_unchanged(payload):
    body = json.dumps(payload).encode()
    request = parse(body, "application/json; charset=utf-8")
    assert not request.mergeable and request.body == body


def test_csv_is_passed_through_unparsed():
    request = parse(b"image\naGk=\n", "text/csv")
    assert not request.mergeable and request.content_type == "text/csv"


def test_a_body_that_is_not_json_is_refused_naming_the_problem():
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse(b'{"dataframe_split": ', "application/json")


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_json_nested_deeper_than_the_bound_is_refused_before_it_is_parsed(depth):
    with pytest.raises(BadRequest, match=f"deeper than {MAX_JSON_DEPTH}"):
        parse(b"[" * depth + b"]" * depth, "application/json")


def test_brackets_inside_strings_do_not_count_as_nesting():
    pixels = '"' + "[" * 100 + '\\"' + "]" * 100 + '"'
    body = ('{"dataframe_split": {"columns": ["pixels"], "data": [[' + pixels + "]]}}").encode()
    assert parse(body, None).mergeable


def test_an_answer_without_predictions_is_named():
    assert predictions_of(b'{"predictions": [{"label": 3}]}') == [{"label": 3}]
    with pytest.raises(ValueError):
        predictions_of(b'{"outputs": []}')
