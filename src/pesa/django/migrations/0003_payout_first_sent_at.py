"""``Payout.first_sent_at``: when the payout's B2C request was counted, before it left.

``PESA_PAYOUT_DEADLINE`` counts from it (the ledger's rule, shared with the gateway). This
app sends a payout once, in the request that creates it, so existing payouts (all with
their one attempt counted) get ``first_sent_at = created_at``: their deadline is exactly
what it was. Reversed, the column is dropped and the deadline counts from creation again.
"""

from typing import Any

from django.db import migrations, models
from django.db.models import F


def backfill(apps: Any, schema_editor: Any) -> None:
    payout = apps.get_model("pesa", "Payout")
    db = schema_editor.connection.alias
    payout.objects.using(db).filter(attempts__gt=0, first_sent_at__isnull=True).update(
        first_sent_at=F("created_at")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("pesa", "0002_receipts_payouts"),
    ]

    operations = [
        migrations.AddField(
            model_name="payout",
            name="first_sent_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
    ]
