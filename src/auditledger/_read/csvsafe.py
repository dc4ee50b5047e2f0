"""CSV cells that are safe to open in a spreadsheet (OWASP, "CSV Injection").

A cell beginning with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return (OWASP) or a NUL
(ASVS) may be run as a formula by Excel, LibreOffice or Sheets. Such a cell gets a single quote
in front, which spreadsheets show as text and do not evaluate; every cell is also quoted, with
embedded quotes doubled, as OWASP asks. Only the CSV is changed: JSONL stays lossless.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import IO, Any

import orjson

from .rows import JSON_COLUMNS, SEED_COLUMNS

TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\x00")


def neutralise(cell: str) -> str:
    return "'" + cell if cell.startswith(TRIGGERS) else cell


def csv_cells(record: dict[str, Any]) -> list[str]:
    """One row in the seed's column order: JSON values as compact JSON text, null as empty."""
    cells = []
    for name in SEED_COLUMNS:
        value = record[name]
        if value is None:
            cells.append("")
        elif name in JSON_COLUMNS:
            cells.append(neutralise(orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()))
        else:
            cells.append(neutralise(str(value)))
    return cells


def write_csv(out: IO[str], records: Iterable[dict[str, Any]]) -> None:
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(SEED_COLUMNS)
    for record in records:
        writer.writerow(csv_cells(record))
