"""Reading the catalog's series and findings into the arrays of its columnar copy
(:mod:`radflow.cohorts.columns`): one array per cohort field in the cohort's list order (``ORDER
BY study_date, id``), text lowered by the database's own ``lower()``, text and codes as numbers
into a dictionary of their distinct values, findings as (position, code) pairs."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.engine import Connection

from radflow.cohorts.definition import FIELDS
from radflow.cohorts.masks import EPOCH

CHUNK = 50_000  # rows read per round
_FIELDS = [name for name in FIELDS if name != "finding"]


def _select_list() -> str:
    parts = ["id"]
    for name in _FIELDS:
        parts.append(f"lower({name})" if FIELDS[name].kind == "text" else name)
    return ", ".join(parts)


class _Dictionary:
    """Distinct values of a text or code column, numbered in order of first sight."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def encode(self, values: tuple[Any, ...]) -> np.ndarray:
        index = self.index
        return np.fromiter((-1 if v is None else index.setdefault(v, len(index)) for v in values),
                           dtype=np.int32, count=len(values))

    @property
    def words(self) -> list[str]:
        return list(self.index)


def _convert(kind: str, values: tuple[Any, ...], words: _Dictionary | None) -> np.ndarray:
    if kind in ("code", "text"):
        assert words is not None
        return words.encode(values)
    if kind == "bool":
        return np.fromiter((-1 if v is None else int(bool(v)) for v in values), dtype=np.int8,
                           count=len(values))
    if kind == "date":
        days = np.array(values, dtype="datetime64[D]")
        out = (days - EPOCH).astype(np.float64)
        out[np.isnat(days)] = np.nan
        return out
    return np.array(values, dtype=np.float64)  # None -> nan


def read_series(connection: Connection) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The copy's arrays (``id``, one per field, ``finding_pos``/``finding_code``) and the words
    of its dictionaries, read on this connection."""
    dictionaries = {name: _Dictionary() for name in _FIELDS if FIELDS[name].kind in ("code", "text")}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ["id", *_FIELDS]}
    result = connection.execution_options(stream_results=True).exec_driver_sql(
        f"SELECT {_select_list()} FROM series ORDER BY study_date, id")
    while rows := result.fetchmany(CHUNK):
        columns = list(zip(*rows, strict=True))
        parts["id"].append(np.array(columns[0], dtype=np.int64))
        for name, values in zip(_FIELDS, columns[1:], strict=True):
            parts[name].append(_convert(FIELDS[name].kind, values, dictionaries.get(name)))
    arrays = {name: np.concatenate(chunks) if chunks else np.zeros(0, _empty_dtype(name))
              for name, chunks in parts.items()}
    ids = arrays["id"]
    sorter = np.argsort(ids)

    def positions(series_ids: list[int]) -> np.ndarray:
        wanted = np.array(series_ids, dtype=np.int64)
        return sorter[np.searchsorted(ids, wanted, sorter=sorter)].astype(np.int32)

    rows = connection.exec_driver_sql("SELECT DISTINCT series_pk, lower(code) FROM finding").all()
    words = _Dictionary()
    arrays["finding_pos"] = positions([r[0] for r in rows])
    arrays["finding_code"] = words.encode(tuple(r[1] for r in rows))
    dictionaries["finding"] = words
    return arrays, {name: d.words for name, d in dictionaries.items()}


def _empty_dtype(name: str) -> Any:
    kind = "id" if name == "id" else FIELDS[name].kind
    return {"id": np.int64, "code": np.int32, "text": np.int32, "bool": np.int8}.get(kind, np.float64)
