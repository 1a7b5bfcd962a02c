"""Set-based row updates for the billing runs."""

from collections.abc import Sequence

from django.db import connection
from django.db.models import Model


def bulk_set(objects: Sequence[Model], fields: Sequence[str]) -> None:
    """Write ``fields`` of many objects (each with its own values) in one statement.

    On PostgreSQL an ``UPDATE ... FROM (VALUES ...)``: Django's ``bulk_update`` builds a CASE
    expression per object and field, which costs more Python time than the whole update costs
    the database at a few hundred rows. Elsewhere ``bulk_update``."""
    if not objects:
        return
    model = type(objects[0])
    if connection.vendor != "postgresql":
        model.objects.bulk_update(objects, fields, batch_size=500)
        return
    meta = model._meta
    model_fields = [meta.get_field(name) for name in fields]
    pk = meta.pk
    row = "({})".format(
        ", ".join(f"%s::{field.db_type(connection)}" for field in [pk, *model_fields])
    )
    columns = ", ".join(connection.ops.quote_name(f.column) for f in [pk, *model_fields])
    assignments = ", ".join(
        f"{connection.ops.quote_name(f.column)} = v.{connection.ops.quote_name(f.column)}"
        for f in model_fields
    )
    table = connection.ops.quote_name(meta.db_table)
    key = connection.ops.quote_name(pk.column)
    sql = (
        f"UPDATE {table} SET {assignments} "  # noqa: S608 - names from model metadata
        f"FROM (VALUES {', '.join([row] * len(objects))}) AS v({columns}) "
        f"WHERE {table}.{key} = v.{key}"
    )
    params = [
        field.get_db_prep_value(getattr(obj, field.attname), connection)
        for obj in objects
        for field in [pk, *model_fields]
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def jit_off() -> None:
    """Switch PostgreSQL's JIT compiler off for the rest of the transaction. The billing runs'
    set-based statements are estimated costly enough to be compiled, and compiling them takes
    longer than running them (hundreds of milliseconds a statement)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")


def statistics_refresh(model: type[Model]) -> None:
    """``ANALYZE`` the model's table (PostgreSQL). A billing run that fills a table the planner
    last saw nearly empty (a young database, or the first run of a large month) calls this
    once the table has grown: the foreign-key checks that run at each batch's commit are
    planned from those statistics and kept for the session, and planned on an "empty" table
    they scan it whole for every row the batch claims — a commit slower with every batch.
    ANALYZE invalidates those plans; the next checks use the primary key's index."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
