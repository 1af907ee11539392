"""CSV export of tasks, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from taskmanager.kit.fields import format_timestamp
from taskmanager.tasks.repository import TASK_FIELDS, TaskRow

CSV_COLUMNS = TASK_FIELDS
# A cell starting with one of these is run as a formula by Excel, LibreOffice and Sheets
# (OWASP "CSV injection"); a leading apostrophe makes it text.
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# Rows are flushed in chunks so the stream neither holds everything nor sends tiny frames.
_FLUSH_ROWS = 200


def neutralize(cell: str) -> str:
    return "'" + cell if cell.startswith(_FORMULA_TRIGGERS) else cell


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, list):
        return neutralize(",".join(value))
    if isinstance(value, str):
        return neutralize(value)
    return str(value)


def csv_row(row: TaskRow) -> list[str]:
    return [_cell(getattr(row, column)) for column in CSV_COLUMNS]


async def csv_stream(rows: AsyncIterator[TaskRow]) -> AsyncIterator[bytes]:
    """The header, then the rows, as UTF-8 CSV chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    pending = 0
    async for row in rows:
        writer.writerow(csv_row(row))
        pending += 1
        if pending >= _FLUSH_ROWS:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode()
