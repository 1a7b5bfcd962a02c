"""Writes in few round trips, for the paths that run many times a second (a booking).

``insert_together`` inserts several new rows, and the audit trail's row of each audited one, as
``save()`` would, but on PostgreSQL in one statement: one round trip instead of one per row,
and none of the ORM's per-save work."""

import functools
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from django.db import connection, models
from django.db.models.expressions import Col

from core.history import creation_record


def _insert(instance: models.Model) -> tuple[str, list[Any], models.Field | None]:
    """``INSERT INTO … VALUES …`` of ``instance`` as ``save()`` would write it (defaults,
    ``auto_now``/``auto_now_add`` stamped on the instance), and its primary key if the
    database makes it (an auto-increment id), else None."""
    meta = instance._meta
    quote = connection.ops.quote_name
    generated = meta.pk if meta.pk is not None and meta.pk.db_returning else None
    fields = [field for field in meta.local_concrete_fields if field is not generated]
    values = [
        field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields
    ]
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608 - names from the model
        quote(meta.db_table),
        ", ".join(quote(field.column) for field in fields),
        ", ".join(["%s"] * len(fields)),
    )
    if generated is not None:
        sql += f" RETURNING {quote(generated.column)}"
    return sql, values, generated


def insert_together(*instances: models.Model) -> None:
    """Insert the new rows of ``instances`` (not saved yet), in the order given, each followed
    by its audit-trail row when its model keeps history (``core.history.creation_record``):
    the rows ``save()`` would write, with generated ids set on the instances, which are then
    marked saved. No model signal is sent.

    On PostgreSQL this is one statement (data-modifying CTEs; foreign keys are checked at the
    end of it, so a row may refer to one inserted before it in the same call); elsewhere one
    statement per row. Inside the caller's transaction."""
    statements: list[tuple[models.Model, str, list[Any], models.Field | None]] = []
    for instance in instances:
        statements.append((instance, *_insert(instance)))
        record = creation_record(instance)
        if record is not None:
            statements.append((record, *_insert(record)))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            parts = [f"row_{i} AS ({sql})" for i, (_, sql, _, _) in enumerate(statements)]
            generated = [(i, row) for i, row in enumerate(statements) if row[3] is not None]
            select = ", ".join(f"(SELECT * FROM row_{i})" for i, _ in generated) or "1"  # noqa: S608
            cursor.execute(
                f"WITH {', '.join(parts)} SELECT {select}",
                [value for _, _, values, _ in statements for value in values],
            )
            ids = cursor.fetchone() if generated else ()
            for (_, (instance, _, _, field)), value in zip(generated, ids, strict=True):
                setattr(instance, field.attname, value)
        else:
            for instance, sql, values, field in statements:
                cursor.execute(sql, values)
                if field is not None:
                    setattr(instance, field.attname, cursor.fetchone()[0])
    for instance, *_ in statements:
        instance._state.adding = False
        instance._state.db = connection.alias


M = TypeVar("M", bound=models.Model)


class Columns(Generic[M]):
    """Read rows of ``model`` from plain SQL into ORM instances without building an ORM query:
    for the reads every request makes (an API key, a tenant to lock, a booking's pools).

    ``columns`` is the select list of every concrete field, or of those named in ``only``
    (``alias.column, …``, in field order; the others are deferred, as with ``only()``);
    ``take(row)`` builds the instance from the first ``width`` values of a result row, with the
    database's and the fields' converters applied as the ORM applies them, and returns it with
    the rest of the row (so one row may carry a pool, its region and its GPU model)."""

    def __init__(self, model: type[M], alias: str, only: Sequence[str] | None = None) -> None:
        self.model = model
        self.fields = [
            field
            for field in model._meta.concrete_fields
            if only is None or field.name in only or field.primary_key
        ]
        quote = connection.ops.quote_name
        self.columns = ", ".join(f"{alias}.{quote(field.column)}" for field in self.fields)
        self.width = len(self.fields)
        self.names = [field.attname for field in self.fields]

    def _converters(self) -> list[tuple[int, list[Any], Col]]:
        found = []
        for index, field in enumerate(self.fields):
            converters, expression = _field_converters(self.model, field.name, connection.vendor)
            if converters:
                found.append((index, converters, expression))
        return found

    def take(self, row: Sequence[Any]) -> tuple[M, Sequence[Any]]:
        values = list(row[: self.width])
        for index, converters, expression in _converters_of(self, connection.vendor):
            value = values[index]
            for converter in converters:
                value = converter(value, expression, connection)
            values[index] = value
        return self.model.from_db(connection.alias, self.names, values), row[self.width :]


@functools.cache
def _converters_of(columns: Columns[Any], vendor: str) -> list[tuple[int, list[Any], Col]]:
    return columns._converters()


@functools.cache
def _field_converters(model: type[models.Model], name: str, vendor: str) -> tuple[list[Any], Col]:
    expression = Col(model._meta.db_table, model._meta.get_field(name))
    converters = connection.ops.get_db_converters(expression)
    return converters + expression.get_db_converters(connection), expression


def from_db(model: type[models.Model], name: str, value: Any) -> Any:
    """A value of ``model``'s field ``name`` as a plain statement returned it, converted as the
    ORM converts it (SQLite returns a DECIMAL as a float, say)."""
    converters, expression = _field_converters(model, name, connection.vendor)
    for converter in converters:
        value = converter(value, expression, connection)
    return value
