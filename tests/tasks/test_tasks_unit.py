"""Task rules that need no database: validation, tags, ETags, cursors, CSV cells."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from taskmanager.kit.errors import MalformedRequest, ValidationFailed
from taskmanager.kit.etags import expected_versions, none_match, strong_etag
from taskmanager.kit.pagination import InvalidCursor, KeysetCursor, decode_cursor, encode_cursor
from taskmanager.tasks.export import csv_row, neutralize
from taskmanager.tasks.filters import SortBy, TaskFilters, TaskListQuery
from taskmanager.tasks.repository import TASK_FIELDS, TaskRow
from taskmanager.tasks.schemas import TaskCreate, TaskOut, TaskPatch, normalize_tags
from taskmanager.tasks.service import sort_value_from_json

KEY = "unit-test-signing-key"
CONTEXT = b"unit-test/v1:"


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
    with pytest.raises(MalformedRequest):
        TaskPatch.model_validate({})
    for field in ("title", "status", "priority", "tags", "project_id"):
        with pytest.raises(ValidationError) as raised:
            TaskPatch.model_validate({field: None})
        assert raised.value.errors()[0]["loc"] == (field,)


def test_patch_schema_shows_non_nullable_fields_and_min_properties() -> None:
    schema = TaskPatch.model_json_schema()
    assert schema["minProperties"] == 1
    properties = schema["properties"]
    for field in ("title", "status", "priority", "tags", "project_id"):
        assert "null" not in str(properties[field]), (field, properties[field])
    for field in ("description", "due_date", "assignee_id"):
        assert {"type": "null"} in properties[field]["anyOf"], field


def test_task_row_has_exactly_the_documented_fields() -> None:
    assert list(TASK_FIELDS) == list(TaskOut.model_fields)
    assert list(TaskRow.__dataclass_fields__) == list(TaskOut.model_fields)


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


def _cursor(**changes: object) -> KeysetCursor:
    values: dict[str, object] = {
        "query": {"sort_by": "created_at", "order": "desc", "status": ["pending"]},
        "limit": 20,
        "value": "2026-01-01T00:00:00+00:00",
        "last_id": 42,
    }
    values.update(changes)
    return KeysetCursor(**values)  # type: ignore[arg-type]


def test_cursor_round_trip() -> None:
    cursor = _cursor()
    token = encode_cursor(cursor, KEY, context=CONTEXT)
    assert decode_cursor(token, KEY, context=CONTEXT) == cursor
    assert "=" not in token


def test_cursor_tampering_is_detected() -> None:
    token = encode_cursor(_cursor(), KEY, context=CONTEXT)
    body, _, sig = token.partition(".")
    forged = encode_cursor(_cursor(last_id=1), "another-key", context=CONTEXT)
    candidates = [
        forged,
        forged.partition(".")[0] + "." + sig,
        body + "." + sig[:-1],
        body,
        "",
        "%%%.%%%",
        token + "." + sig,
        "x" * 9000,
        encode_cursor(_cursor(), KEY, context=b"another-list/v1:"),
    ]
    for bad in candidates:
        with pytest.raises(InvalidCursor):
            decode_cursor(bad, KEY, context=CONTEXT)


def test_cursor_values_convert_per_sort() -> None:
    when = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert sort_value_from_json(SortBy.CREATED_AT, when.isoformat()) == when
    assert sort_value_from_json(SortBy.DUE_DATE, None) is None
    assert sort_value_from_json(SortBy.PRIORITY, 3) == 3
    assert sort_value_from_json(SortBy.TITLE, "abc") == "abc"
    for sort_by, value in (
        (SortBy.PRIORITY, "3"),
        (SortBy.TITLE, 5),
        (SortBy.CREATED_AT, None),
    ):
        with pytest.raises(ValidationFailed) as raised:
            sort_value_from_json(sort_by, value)
        assert raised.value.errors[0]["type"] == "invalid_cursor"


def test_equal_filters_are_equal_in_the_cursor() -> None:
    a = TaskListQuery.model_validate({"status": ["pending", "completed"], "q": "x"})
    b = TaskListQuery.model_validate({"status": ["completed", "pending", "pending"], "q": "x"})
    assert a.as_json() == b.as_json()
    only_pending = TaskListQuery.model_validate({"status": ["pending"], "q": "x"})
    assert a.as_json() != only_pending.as_json()
    assert TaskListQuery().as_json() != TaskListQuery(project_id=1).as_json()
    assert TaskFilters(assignee_id="me").assignee_for(7) == 7
    assert TaskFilters(assignee_id=9).assignee_for(7) == 9
    tags = TaskFilters.model_validate({"tag": ["Home", "work", "home"], "priority": [3, 1, 3]})
    assert tags.tag == ["home", "work"]
    assert tags.priority == [1, 3]


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
    when = datetime(2026, 1, 1, tzinfo=UTC)
    row = TaskRow(
        id=1,
        project_id=2,
        title="=x",
        description=None,
        status="pending",
        priority=3,
        due_date=when,
        tags=["-a", "b"],
        assignee_id=None,
        created_by=5,
        created_at=when,
        updated_at=when,
        completed_at=None,
        version=1,
    )
    assert csv_row(row) == [
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
