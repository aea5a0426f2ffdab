"""Copy a whole registry database to another one (SQLite to PostgreSQL), verified.

`gateway-admin db copy --to postgresql+psycopg://...` migrates the target to
the head revision, refuses a target that already holds data, copies every
table of the schema in foreign-key order in batches, moves PostgreSQL's
sequences past the ids copied, then reads both databases again, table by
table in key order, and compares them row for row (values as the models type
them: times as aware UTC, JSON as objects). The source must be at the head
revision too, and should not be written meanwhile (stop the gateway and
healthd, or copy from a backup).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, Table, func, select, text, update

from shared.db import Database, ensure_schema_current, upgrade_to_head
from shared.models import Base, KeysGeneration, RegistryGeneration

BATCH_ROWS = 1000
# Single-row tables the migrations seed: their value is carried over, not inserted.
COUNTERS: tuple[type[RegistryGeneration] | type[KeysGeneration], ...] = (
    RegistryGeneration,
    KeysGeneration,
)


class CopyRefused(Exception):
    """The copy cannot start (the target holds data) or did not give equal rows."""


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)  # table → rows copied and verified

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def data_tables() -> list[Table]:
    """Every table of the schema, parents first, without the seeded counters."""
    counters = {model.__tablename__ for model in COUNTERS}
    return [table for table in Base.metadata.sorted_tables if table.name not in counters]


def _ordered(table: Table) -> list[object]:
    return list(table.primary_key.columns) or list(table.columns)


def _rows(connection: Connection, table: Table) -> Iterator[dict[str, object]]:
    result = connection.execution_options(yield_per=BATCH_ROWS).execute(
        select(table).order_by(*_ordered(table))  # type: ignore[arg-type]
    )
    for row in result:
        yield dict(row._mapping)


def _refuse_unless_empty(connection: Connection) -> None:
    for table in data_tables():
        count = connection.scalar(select(func.count()).select_from(table))
        if count:
            raise CopyRefused(
                f"the target already holds data ({count} rows in {table.name}); "
                "copy into a new, empty database"
            )


def _copy_table(source: Connection, target: Connection, table: Table) -> int:
    copied = 0
    batch: list[dict[str, object]] = []
    for row in _rows(source, table):
        batch.append(row)
        if len(batch) == BATCH_ROWS:
            target.execute(table.insert(), batch)
            copied, batch = copied + len(batch), []
    if batch:
        target.execute(table.insert(), batch)
        copied += len(batch)
    return copied


def _carry_counters(source: Connection, target: Connection) -> None:
    """The generations go over one above the source's, so a process that knew the
    source's value sees a change."""
    for model in COUNTERS:
        value = source.scalar(select(model.value).where(model.id == 1)) or 0
        target.execute(update(model).where(model.id == 1).values(value=int(value) + 1))


def _advance_sequences(target: Connection) -> None:
    """PostgreSQL's serial columns do not see explicit ids: start them past the copy."""
    if target.dialect.name != "postgresql":
        return
    for table in data_tables():
        column = table.autoincrement_column
        if column is None:
            continue
        target.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 0) + 1, false)"
            )
        )


def verify(source: Engine, target: Engine) -> CopyReport:
    """Compare every table row for row; raise CopyRefused at the first difference."""
    report = CopyReport()
    missing: dict[str, object] = {}
    with source.connect() as left, target.connect() as right:
        for table in data_tables():
            count = 0
            theirs = _rows(right, table)
            for mine in _rows(left, table):
                count += 1
                if next(theirs, missing) != mine:
                    key = {c.name: mine[c.name] for c in table.primary_key.columns}
                    raise CopyRefused(f"{table.name}: the row {key} differs after the copy")
            if next(theirs, missing) is not missing:
                raise CopyRefused(f"{table.name}: the target has more rows than the source")
            report.rows[table.name] = count
    return report


def copy_database(source_url: str, target_url: str) -> CopyReport:
    """Copy everything from `source_url` into the (new, empty) `target_url`, verified."""
    upgrade_to_head(target_url)
    source, target = Database.connect(source_url), Database.connect(target_url)
    try:
        ensure_schema_current(source.engine)
        with source.engine.connect() as reading, target.engine.begin() as writing:
            _refuse_unless_empty(writing)
            for table in data_tables():
                _copy_table(reading, writing, table)
            _carry_counters(reading, writing)
            _advance_sequences(writing)
        report = verify(source.engine, target.engine)
    finally:
        source.dispose()
        target.dispose()
    return report
