"""The tenant ledger is append-only in the database too: a PostgreSQL trigger refuses UPDATE
and DELETE of ledger entries (corrections are new entries). SQLSTATE 23001
(restrict_violation) surfaces in Django as ``IntegrityError``. No trigger on other databases."""

from django.db import migrations

FORWARDS = [
    """
    CREATE OR REPLACE FUNCTION marketplace_ledger_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'ledger entries are append-only; post a correcting entry'
            USING ERRCODE = 'restrict_violation';
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER marketplace_ledger_append_only BEFORE UPDATE OR DELETE
    ON marketplace_ledgerentry FOR EACH ROW EXECUTE FUNCTION marketplace_ledger_append_only()
    """,
]

BACKWARDS = [
    "DROP TRIGGER IF EXISTS marketplace_ledger_append_only ON marketplace_ledgerentry",
    "DROP FUNCTION IF EXISTS marketplace_ledger_append_only()",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0002_default_policies")]

    operations = [migrations.RunPython(_run(FORWARDS), _run(BACKWARDS))]
