"""PostgreSQL triggers that make issued documents immutable whatever code writes to them
(queryset ``update()``, raw SQL, another service): the ORM guards and the read-only admin are
for good messages, these are for truth. Errors use SQLSTATE 23001 (restrict_violation), which
Django raises as ``IntegrityError``. Other databases (SQLite in development) get no triggers."""

from django.db import migrations

RAISE = "USING ERRCODE = 'restrict_violation'"

FORWARDS = [
    # Arithmetic invariants. Not model constraints because SQLite (development) stores
    # decimals as floats, where equality of sums is unreliable.
    """
    ALTER TABLE billing_invoice ADD CONSTRAINT invoice_total_adds_up
    CHECK (total = subtotal - discount_total + tax_amount)
    """,
    """
    ALTER TABLE billing_invoiceline ADD CONSTRAINT line_amount_adds_up
    CHECK (amount = gross_amount - discount_amount)
    """,
    # Invoices: a draft may change freely; an issued invoice only from finalized to paid or
    # void (with the timestamps and reason of that change), and it is never deleted.
    f"""
    CREATE OR REPLACE FUNCTION billing_invoice_guard() RETURNS trigger AS $$
    DECLARE
        mutable text[] := ARRAY['status', 'paid_at', 'voided_at', 'void_reason'];
    BEGIN
        IF OLD.status = 'draft' THEN
            RETURN COALESCE(NEW, OLD);
        END IF;
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'invoice % is issued and cannot be deleted', OLD.number {RAISE};
        END IF;
        IF to_jsonb(NEW) = to_jsonb(OLD) THEN
            RETURN NEW;
        END IF;
        IF NOT (OLD.status = 'finalized' AND NEW.status IN ('paid', 'void'))
           OR (to_jsonb(NEW) - mutable) IS DISTINCT FROM (to_jsonb(OLD) - mutable) THEN
            RAISE EXCEPTION 'invoice % is issued: only finalized -> paid or void may change it',
                OLD.number {RAISE};
        END IF;
        RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER billing_invoice_immutable BEFORE UPDATE OR DELETE ON billing_invoice
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_guard()
    """,
    # Lines of an issued invoice: no insert, update or delete.
    f"""
    CREATE OR REPLACE FUNCTION billing_invoiceline_guard() RETURNS trigger AS $$
    BEGIN
        IF TG_OP <> 'INSERT' AND EXISTS (
            SELECT 1 FROM billing_invoice WHERE id = OLD.invoice_id AND status <> 'draft'
        ) THEN
            RAISE EXCEPTION 'lines of issued invoice % cannot change', OLD.invoice_id {RAISE};
        END IF;
        IF TG_OP <> 'DELETE' AND EXISTS (
            SELECT 1 FROM billing_invoice WHERE id = NEW.invoice_id AND status <> 'draft'
        ) THEN
            RAISE EXCEPTION 'issued invoice % cannot take lines', NEW.invoice_id {RAISE};
        END IF;
        RETURN COALESCE(NEW, OLD);
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER billing_invoiceline_immutable
    BEFORE INSERT OR UPDATE OR DELETE ON billing_invoiceline
    FOR EACH ROW EXECUTE FUNCTION billing_invoiceline_guard()
    """,
    # Usage records and charges on an issued invoice: billed, so frozen. (The WHEN clause
    # keeps the trigger off the hot path: claiming unbilled rows never calls it.)
    f"""
    CREATE OR REPLACE FUNCTION billing_billed_guard() RETURNS trigger AS $$
    BEGIN
        IF EXISTS (
            SELECT 1 FROM billing_invoice WHERE id = OLD.invoice_id AND status <> 'draft'
        ) THEN
            RAISE EXCEPTION '% row % is on issued invoice %', TG_TABLE_NAME, OLD.id,
                OLD.invoice_id {RAISE};
        END IF;
        RETURN COALESCE(NEW, OLD);
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER billing_usagerecord_billed BEFORE UPDATE OR DELETE ON billing_usagerecord
    FOR EACH ROW WHEN (OLD.invoice_id IS NOT NULL) EXECUTE FUNCTION billing_billed_guard()
    """,
    """
    CREATE TRIGGER billing_charge_billed BEFORE UPDATE OR DELETE ON billing_charge
    FOR EACH ROW WHEN (OLD.invoice_id IS NOT NULL) EXECUTE FUNCTION billing_billed_guard()
    """,
    # Credit notes and payments are issued at creation: never updated nor deleted.
    f"""
    CREATE OR REPLACE FUNCTION billing_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only', TG_TABLE_NAME {RAISE};
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER billing_creditnote_immutable BEFORE UPDATE OR DELETE ON billing_creditnote
    FOR EACH ROW EXECUTE FUNCTION billing_append_only()
    """,
    """
    CREATE TRIGGER billing_payment_immutable BEFORE UPDATE OR DELETE ON billing_payment
    FOR EACH ROW EXECUTE FUNCTION billing_append_only()
    """,
    # Number counters only ever move up: a reused number is impossible.
    f"""
    CREATE OR REPLACE FUNCTION billing_sequence_guard() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' OR NEW.last_number < OLD.last_number
           OR NEW.series <> OLD.series OR NEW.year <> OLD.year THEN
            RAISE EXCEPTION 'document numbers only move up' {RAISE};
        END IF;
        RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER billing_sequence_gapless BEFORE UPDATE OR DELETE ON billing_documentsequence
    FOR EACH ROW EXECUTE FUNCTION billing_sequence_guard()
    """,
]

BACKWARDS = [
    "DROP TRIGGER IF EXISTS billing_sequence_gapless ON billing_documentsequence",
    "DROP TRIGGER IF EXISTS billing_payment_immutable ON billing_payment",
    "DROP TRIGGER IF EXISTS billing_creditnote_immutable ON billing_creditnote",
    "DROP TRIGGER IF EXISTS billing_charge_billed ON billing_charge",
    "DROP TRIGGER IF EXISTS billing_usagerecord_billed ON billing_usagerecord",
    "DROP TRIGGER IF EXISTS billing_invoiceline_immutable ON billing_invoiceline",
    "DROP TRIGGER IF EXISTS billing_invoice_immutable ON billing_invoice",
    "DROP FUNCTION IF EXISTS billing_sequence_guard()",
    "DROP FUNCTION IF EXISTS billing_append_only()",
    "DROP FUNCTION IF EXISTS billing_billed_guard()",
    "DROP FUNCTION IF EXISTS billing_invoiceline_guard()",
    "DROP FUNCTION IF EXISTS billing_invoice_guard()",
    "ALTER TABLE billing_invoiceline DROP CONSTRAINT IF EXISTS line_amount_adds_up",
    "ALTER TABLE billing_invoice DROP CONSTRAINT IF EXISTS invoice_total_adds_up",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(_run(FORWARDS), _run(BACKWARDS))]
