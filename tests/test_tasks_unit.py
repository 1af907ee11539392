"""Task rules that need no database: validation, tags, ETags, cursors, CSV cells."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from taskmanager.etags import expected_versions, none_match, strong_etag
from taskmanager.tasks.cursor import (
    Cursor,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    from_json_value,
    to_json_value,
)
from taskmanager.tasks.export import csv_row, neutralize
from taskmanager.tasks.schemas import TaskCreate, TaskOut, TaskPatch, normalize_tags, task_payload
from taskmanager.tasks.service import ListQuery

KEY = "unit-test-signing-key"


def test_tags_are_lowercased_deduplicated_in_order() -> None:
    assert normalize_tags(["B", "a", "b", "A", "c"]) == ["b", "a", "c"]
    assert normalize_tags([]) == []
    assert len(normalize_tags([f"t{i}" for i in range(20)] * 3)) == 20
    with pytest.raises(ValueError, match="at most 20"):
        normalize_tags([f"t{i}" for i in range(21)])


def test_create_model_trims_and_converts() -> None:
    task = TaskCreate.model_validate(
        {"title": "  x  ", "tags": [" A "], "due_date": "2026-01-01T01:00:00+01:00"}
    )
    assert task.title == "x"
    assert task.tags == ["a"]
    assert task.due_date == datetime(2026, 1, 1, tzinfo=UTC)
    assert task.due_date is not None
    assert task.due_date.utcoffset() is not None


@pytest.mark.parametrize(
    "body",
    [
        {"title": ""},
        {"title": "\t \n"},
        {"title": "a", "due_date": "2026-01-01T00:00:00"},
        {"title": "a", "due_date": 0},
        {"title": "a", "id": 1},
        {"title": "a", "version": 1},
        {"title": "a", "description": "\x00"},
    ],
)
def test_create_model_rejects(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TaskCreate.model_validate(body)


def test_patch_model_tracks_fields_sent_and_refuses_null_for_required_ones() -> None:
    patch = TaskPatch.model_validate({"description": None})
    assert patch.model_fields_set == {"description"}
    assert TaskPatch.model_validate({}).model_fields_set == set()
    for field in ("title", "status", "priority", "tags", "project_id"):
        with pytest.raises(ValidationError):
            TaskPatch.model_validate({field: None})


def test_payload_has_exactly_the_documented_fields() -> None:
    class Row:
        def __getattr__(self, name: str) -> str:
            return name

    assert list(task_payload(Row())) == list(TaskOut.model_fields)


def test_etags_and_conditions() -> None:
    tag = strong_etag(17, 3)
    assert tag == '"17-3"'
    assert none_match(tag, tag)
    assert none_match(f"W/{tag}", tag)
    assert none_match(f'"x", {tag}', tag)
    assert none_match("*", tag)
    assert not none_match('"17-2"', tag)
    assert not none_match(None, tag)

    assert expected_versions(None, 17) is None
    assert expected_versions("*", 17) is None
    assert expected_versions('"17-3"', 17) == [3]
    assert expected_versions('"17-3", "17-4"', 17) == [3, 4]
    assert expected_versions('W/"17-3"', 17) == [], "If-Match uses strong comparison"
    assert expected_versions('"18-3"', 17) == []
    assert expected_versions('"17-x"', 17) == []
    assert expected_versions('"17-99999999999999999999"', 17) == []
    assert expected_versions("garbage", 17) == []
    assert expected_versions('"17-3", "17-3"', 17) == [3]
    assert expected_versions('"17-03"', 17) == [], "strong comparison is textual"
    assert expected_versions('"017-3"', 17) == []
    assert expected_versions('"17-2147483647"', 17) == [2**31 - 1]
    assert expected_versions('"17-2147483648"', 17) == [], "beyond the INTEGER column"
    assert expected_versions('"17-9999999999"', 17) == []


def _cursor(**changes: object) -> Cursor:
    values: dict[str, object] = {
        "sort_by": "created_at",
        "order": "desc",
        "value": "2026-01-01T00:00:00+00:00",
        "last_id": 42,
        "fingerprint": "abc",
    }
    values.update(changes)
    return Cursor(**values)  # type: ignore[arg-type]


def test_cursor_round_trip() -> None:
    cursor = _cursor()
    token = encode_cursor(cursor, KEY)
    assert decode_cursor(token, KEY) == cursor
    assert "=" not in token


def test_cursor_tampering_is_detected() -> None:
    token = encode_cursor(_cursor(), KEY)
    body, _, sig = token.partition(".")
    forged = encode_cursor(_cursor(last_id=1), "another-key")
    candidates = [
        forged,
        forged.partition(".")[0] + "." + sig,
        body + "." + sig[:-1],
        body,
        "",
        "%%%.%%%",
        token + "." + sig,
        "x" * 5000,
    ]
    for bad in candidates:
        with pytest.raises(InvalidCursor):
            decode_cursor(bad, KEY)


def test_cursor_values_convert_per_sort() -> None:
    when = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert from_json_value("created_at", to_json_value("created_at", when)) == when
    assert from_json_value("due_date", to_json_value("due_date", None)) is None
    assert from_json_value("priority", 3) == 3
    assert from_json_value("title", "abc") == "abc"
    for sort_by, value in (("priority", "3"), ("title", 5), ("created_at", None)):
        with pytest.raises(InvalidCursor):
            from_json_value(sort_by, value)


def test_filter_fingerprint_is_stable_and_distinguishes_filters() -> None:
    a = ListQuery(statuses=("pending", "completed"), q="x")
    b = ListQuery(statuses=("completed", "pending", "pending"), q="x")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != ListQuery(statuses=("pending",), q="x").fingerprint()
    assert ListQuery().fingerprint() != ListQuery().for_project(1).fingerprint()
    assert ListQuery(assignee_id="me").filters(viewer_id=7).assignee_id == 7
    assert ListQuery(tag="Home").filters(viewer_id=7).tag == "home"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM", "'@SUM"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_formula_cells_are_neutralised(cell: str, expected: str) -> None:
    assert neutralize(cell) == expected


def test_csv_row_formats_values() -> None:
    class Row:
        id = 1
        project_id = 2
        title = "=x"
        description = None
        status = "pending"
        priority = 3
        due_date = datetime(2026, 1, 1, tzinfo=UTC)
        tags = ["-a", "b"]
        assignee_id = None
        created_by = 5
        created_at = datetime(2026, 1, 1, tzinfo=UTC)
        updated_at = datetime(2026, 1, 1, tzinfo=UTC)
        completed_at = None
        version = 1

    assert csv_row(Row()) == [  # type: ignore[arg-type]
        "1",
        "2",
        "'=x",
        "",
        "pending",
        "3",
        "2026-01-01T00:00:00Z",
        "'-a,b",
        "",
        "5",
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00Z",
        "",
        "1",
    ]
