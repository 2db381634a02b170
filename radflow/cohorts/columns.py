"""A columnar copy of the catalog's series, so that cohort counts do not grow with the catalog.

A cohort query that matches a large part of a big catalog reads every matching row in SQL:
over 1,000,000 series the slowest benchmark query took 325 ms on SQLite and 172 ms on
PostgreSQL, whatever the indexes (``bench/bench_cohort.py``). Here the fields of the cohort
language are kept as one array per field, in the order a cohort lists its series, and a
definition is evaluated over them with numpy: a condition is a vectorized comparison (text and
codes through a dictionary of their distinct values), ``all``/``any``/``not`` are bitwise
operations, a count is a population count, and the first 100 matches are the first 100 set
positions. Over 1,000,000 series each query takes a few milliseconds.

Exactness:

* **Same answer as SQL.** A definition is evaluated with SQL's three-valued logic (a condition
  on an unknown value is neither true nor false, and ``not`` keeps it unknown), text is lowered
  by the database's own ``lower()`` when the copy is built, and the rows are read in the
  database's own list order (``ORDER BY study_date, id``). ``tests/test_columns.py`` compares
  both on random definitions, on SQLite and on PostgreSQL.
* **Never stale.** Triggers bump the catalog's generation (``catalog_generation``, migration
  0008) in every transaction that changes a series or a finding. A copy records the generation
  (and the database's token) it was built from, and a query uses it only when they still match;
  otherwise it runs in SQL. A copy is built between two reads of the generation and kept only
  when they agree, so no commit fell in between.
* **has_result from the copy too.** The copy keeps, per series, the bitmask of result kinds
  with a *current* result (:mod:`radflow.cohorts.result_kinds`, read with the rule's own SQL,
  radflow.results.current). Results change with every pipeline run and review, so they have
  their own generation (row 2 of ``catalog_generation``, bumped by triggers on results and
  their feature rows, migration 0011): when only it moved, the series' arrays stay current and
  only this part is made again (one run of the rule's SQL), by :func:`refresh` or by the first
  ``has_result`` query that finds it stale; until then ``has_result`` is read from the catalog.

The copy is made after each ingest burst (:func:`refresh`, from the ``ingest`` flow) when the
catalog holds at least ``RADFLOW_COLUMNS_FROM`` series (20,000 by default; below that SQL
answers in a few milliseconds), and by ``radflow catalog optimize``. Between a change and the
next refresh, queries run in SQL. It lives next to a SQLite catalog (``catalog.columns/``) or,
for a PostgreSQL one, under ``$RADFLOW_HOME/cache/catalog-columns/``, as ``.npy`` files that
processes map read-only.

Example:
    ```python
    from radflow.cohorts import columns

    columns.refresh("sqlite:////srv/radflow/sites/lab/catalog.db", force=True)
    ```
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection, Engine

from radflow.cohorts import result_kinds
from radflow.cohorts.columns_read import read_series
from radflow.cohorts.masks import HasResult, evaluate
from radflow.cohorts.result_kinds import results_generation
from radflow.errors import ConfigurationError

logger = logging.getLogger(__name__)

FORMAT = 3  # 3: the has_result part (result_kinds) with its own generation
LIST_LIMIT = 10_000  # larger listings load their rows in SQL anyway: no gain from the copy


def folder_for(engine: Engine) -> Path | None:
    """Where the copy of this catalog lives (None: an in-memory SQLite catalog)."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        return Path(url.database).resolve().with_suffix(".columns")
    from radflow.settings import get_settings

    key = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return get_settings().home_dir / "cache" / "catalog-columns" / key


def generation(connection: Connection) -> tuple[str, int] | None:
    """The catalog's (token, generation) as this connection sees it."""
    row = connection.exec_driver_sql(
        "SELECT token, value FROM catalog_generation WHERE id = 1").first()
    return (row[0], int(row[1])) if row else None


# -- building ------------------------------------------------------------------------------


def refresh(engine_or_url: Engine | str, *, force: bool = False) -> dict[str, Any]:
    """Build the copy of the catalog when it is missing or stale (and the catalog is big enough
    to need one, unless ``force``). Returns what was done: ``built`` (series, seconds),
    ``results`` (only the ``has_result`` part made again: results changed, series did not),
    ``current`` (nothing to do), ``small`` (no copy kept) or ``busy`` (another process is
    building it, or the catalog changed while it was read: the next refresh builds it)."""
    from radflow.catalog.db import get_engine
    from radflow.settings import get_settings

    engine = get_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    folder = folder_for(engine)
    if folder is None:
        return {"state": "unsupported"}
    began = time.perf_counter()
    with engine.connect() as connection:
        state = generation(connection)
        if state is None:
            return {"state": "unsupported"}
        pointer = _pointer(folder)
        series_current = _built_from(pointer, state)
        if series_current and _results_current(pointer, results_generation(connection)):
            return {"state": "current", "generation": state[1]}
        size = 0 if series_current else \
            connection.exec_driver_sql("SELECT count(*) FROM series").scalar() or 0
    if series_current:
        return _refresh_results(engine, folder)
    if size < get_settings().columns_from and not force:
        shutil.rmtree(folder, ignore_errors=True)
        return {"state": "small", "series": size}
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # study dates, ages, sexes: the owner's only, as the catalog
    with _locked(folder) as locked:
        if not locked:
            return {"state": "busy"}
        with engine.connect() as connection:
            before = _states(connection)
            arrays, words = read_series(connection)
            bits = result_kinds.read(connection, arrays["id"])
            connection.rollback()  # end the read: the next statement sees the latest commit
            after = _states(connection)
        if before[0] is None or after != before:
            return {"state": "busy"}
        _write(folder, before, arrays, words, bits)
    seconds = time.perf_counter() - began
    logger.info("catalog copy for cohort queries: %d series in %.1f s", len(arrays["id"]), seconds)
    return {"state": "built", "series": len(arrays["id"]), "generation": before[0][1],
            "seconds": round(seconds, 2)}


def _refresh_results(engine: Engine, folder: Path) -> dict[str, Any]:
    """Make the copy's ``has_result`` part again (the series' arrays being current), from one
    state of the catalog: labelled with the results generation of that state, it is exact even
    when results are committed meanwhile (then the next query makes it again)."""
    began = time.perf_counter()
    with _locked(folder) as locked:
        if not locked:
            return {"state": "busy"}
        pointer = _pointer(folder)
        with _snapshot(engine) as connection:
            state, results = _states(connection)
            if pointer is None or state is None or not _built_from(pointer, state):
                return {"state": "busy"}  # the series changed meanwhile: a full build is due
            if _results_current(pointer, results):
                return {"state": "current", "generation": state[1]}
            ids = np.load(folder / pointer["folder"] / "id.npy", allow_pickle=False)
            bits = result_kinds.read(connection, ids)
        _write_results(folder, pointer, results, bits)
    seconds = time.perf_counter() - began
    logger.info("has_result part of the catalog copy made again in %.1f s", seconds)
    return {"state": "results", "generation": state[1], "results_generation": results,
            "seconds": round(seconds, 2)}


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose reads all see one state of the catalog (PostgreSQL: a repeatable-read
    transaction; SQLite: a read transaction, which its driver does not begin for reads)."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN")
        else:
            connection.execution_options(isolation_level="REPEATABLE READ")
        try:
            yield connection
        finally:
            connection.rollback()


@contextmanager
def _locked(folder: Path) -> Iterator[bool]:
    """One build at a time per catalog, across processes (False: another one is building)."""
    with open(folder / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _states(connection: Connection) -> tuple[tuple[str, int] | None, int | None]:
    return generation(connection), results_generation(connection)


def _built_from(pointer: dict[str, Any] | None, state: tuple[str, int]) -> bool:
    return bool(pointer) and pointer.get("format") == FORMAT \
        and (pointer["token"], pointer["generation"]) == state


def _results_current(pointer: dict[str, Any] | None, results: int | None) -> bool:
    part = (pointer or {}).get("results")
    return bool(part) and results is not None and part["generation"] == results \
        and part["kinds"] == result_kinds.KINDS


def _pointer(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "current.json").read_text())
    except (OSError, ValueError):
        return None


def _point(folder: Path, meta: dict[str, Any]) -> None:
    tmp = folder / f".current-{uuid.uuid4().hex[:8]}.json"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / "current.json")


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as out:
        np.save(out, array, allow_pickle=False)


def _write(folder: Path, states: tuple[Any, int | None], arrays: dict[str, np.ndarray],
           words: dict[str, list[str]], bits: np.ndarray) -> None:
    state, results = states
    name = f"{state[0][:8]}-{state[1]}-{uuid.uuid4().hex[:6]}"
    staging = folder / f".{name}"
    staging.mkdir()
    for key, array in arrays.items():
        _save(staging / f"{key}.npy", array)
    for key, values in words.items():
        (staging / f"{key}.words.json").write_text(json.dumps(values))
    part = f"results-{results}-{uuid.uuid4().hex[:6]}.npy"
    _save(staging / part, bits)
    meta = {"format": FORMAT, "token": state[0], "generation": state[1],
            "series": len(arrays["id"]), "folder": name,
            "results": {"generation": results, "file": part, "kinds": result_kinds.KINDS}}
    (staging / "meta.json").write_text(json.dumps(meta))
    staging.rename(folder / name)
    _point(folder, meta)
    for old in folder.iterdir():  # processes that mapped an old copy keep their mapping
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _write_results(folder: Path, pointer: dict[str, Any], results: int | None,
                   bits: np.ndarray) -> None:
    target = folder / pointer["folder"]
    part = f"results-{results}-{uuid.uuid4().hex[:6]}.npy"
    _save(target / f".{part}", bits)
    os.replace(target / f".{part}", target / part)
    _point(folder, {**pointer, "results": {"generation": results, "file": part,
                                           "kinds": result_kinds.KINDS}})
    for old in target.glob("results-*.npy"):  # a process that mapped one keeps its mapping
        if old.name != part:
            old.unlink(missing_ok=True)


# -- querying ------------------------------------------------------------------------------


@dataclass
class Columns:
    """One built copy, mapped lazily: a query reads only the arrays of its fields."""

    folder: Path
    token: str
    generation: int
    size: int
    _arrays: dict[str, np.ndarray] = field(default_factory=dict)
    _words: dict[str, list[str]] = field(default_factory=dict)
    _results: tuple[int, list[str], np.ndarray] | None = None  # generation, kinds, bits

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r",
                                         allow_pickle=False)
        return self._arrays[name]

    def words(self, name: str) -> list[str]:
        if name not in self._words:
            self._words[name] = json.loads((self.folder / f"{name}.words.json").read_text())
        return self._words[name]

    def matches(self, node: dict[str, Any], has_result: HasResult | None = None) -> np.ndarray:
        """The positions' truth for a canonical filter node (true only: unknown is not a match);
        ``has_result(kind)``: the positions of the series with a current result of a kind
        (:func:`result_masks`; needed only when the node holds a ``has_result``)."""
        return evaluate(self, node, has_result or _no_results)[0]

    def count(self, node: dict[str, Any], has_result: HasResult | None = None) -> int:
        return int(np.count_nonzero(self.matches(node, has_result)))

    def first_ids(self, node: dict[str, Any], limit: int, offset: int = 0, *,
                  has_result: HasResult | None = None) -> list[int]:
        """The ids of ``limit`` matches from the ``offset``-th on, in the cohort's list order."""
        positions = np.flatnonzero(self.matches(node, has_result))[offset:offset + limit]
        return [int(i) for i in self.array("id")[positions]]

    def result_bits(self, results: int | None) -> tuple[list[str], np.ndarray] | None:
        """The copy's ``has_result`` part (kinds, bitmask per position) if it was read at the
        results generation ``results``, else None."""
        held = self._results
        if held is None or held[0] != results:
            pointer = _pointer(self.folder.parent)
            if not pointer or pointer.get("folder") != self.folder.name \
                    or not _results_current(pointer, results):
                return None
            part = pointer["results"]
            held = (part["generation"], part["kinds"],
                    np.load(self.folder / part["file"], mmap_mode="r", allow_pickle=False))
            self._results = held
        return held[1], held[2]

    def mask_of(self, series_ids: list[int]) -> np.ndarray:
        """The positions of these series (ids of the copy's catalog) as a mask."""
        ids = self.array("id")
        if "_sorter" not in self._arrays:
            self._arrays["_sorter"] = np.argsort(ids)
        sorter = self._arrays["_sorter"]
        found = np.zeros(self.size, dtype=bool)
        wanted = np.asarray(series_ids, dtype=np.int64)
        if wanted.size:
            found[sorter[np.searchsorted(ids, wanted, sorter=sorter)]] = True
        return found


_loaded: dict[Path, Columns] = {}
_lock = threading.Lock()


def current(connection: Connection) -> Columns | None:
    """The copy of this connection's catalog if it is current for what the connection sees
    (its own uncommitted changes included), else None: then the query runs in SQL."""
    try:
        state = generation(connection)
    except Exception:  # noqa: BLE001  (a catalog before migration 0008 has no generation)
        return None
    folder = folder_for(connection.engine)
    if state is None or folder is None:
        return None
    with _lock:
        cached = _loaded.get(folder)
        if cached is not None and (cached.token, cached.generation) == state:
            return cached
        pointer = _pointer(folder)
        if pointer is None or not _built_from(pointer, state):
            return None
        copy = Columns(folder / pointer["folder"], pointer["token"], pointer["generation"],
                       pointer["series"])
        if not (copy.folder / "meta.json").is_file():
            return None
        _loaded[folder] = copy
        return copy


def result_masks(connection: Connection, copy: Columns) -> HasResult | None:
    """``has_result(kind)`` from the copy's ``has_result`` part, if it is current for what this
    connection sees; a stale part is made again first (one run of the rule's SQL, on another
    connection: committed results only). None: it cannot be (this connection's own uncommitted
    results, another process building it): ask the catalog."""
    results = results_generation(connection)
    held = copy.result_bits(results)
    if held is None and results is not None:
        if _refresh_results(connection.engine, copy.folder.parent)["state"] in ("results",
                                                                               "current"):
            held = copy.result_bits(results)
    if held is None:
        return None
    words, bits = held
    return lambda kind: result_kinds.mask(bits, words, kind)


def _no_results(kind: str) -> np.ndarray:
    raise ConfigurationError(f"this cohort has a has_result condition ({kind}) and no answer "
                             "for it was given", fix="pass has_result=columns.result_masks("
                             "connection, copy), or count with radflow.cohorts.count_series")
