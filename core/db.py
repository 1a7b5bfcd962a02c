"""Writes in few round trips, for the paths that run many times a second (a booking).

``insert_together`` inserts several new rows, and the audit trail's row of each audited one, as
``save()`` would, but on PostgreSQL in one statement: one round trip instead of one per row,
and none of the ORM's per-save work."""

from typing import Any

from django.db import connection, models

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
