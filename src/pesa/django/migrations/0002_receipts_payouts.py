"""Receipts (C2B) and payouts (B2C), with their events and Transaction Status queries."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pesa", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Receipt",
            fields=[
                (
                    "id",
                    models.CharField(
                        editable=False, max_length=40, primary_key=True, serialize=False
                    ),
                ),
                ("trans_id", models.CharField(max_length=32, unique=True)),
                ("status", models.CharField(db_index=True, max_length=16)),
                ("source", models.CharField(default="confirmation", max_length=16)),
                ("shortcode", models.CharField(db_index=True, max_length=16)),
                ("amount", models.DecimalField(decimal_places=2, max_digits=16)),
                (
                    "account_reference",
                    models.CharField(blank=True, db_index=True, max_length=64, null=True),
                ),
                ("transaction_type", models.CharField(blank=True, max_length=32, null=True)),
                ("invoice_number", models.CharField(blank=True, max_length=64, null=True)),
                ("third_party_trans_id", models.CharField(blank=True, max_length=64, null=True)),
                ("msisdn", models.CharField(blank=True, max_length=80, null=True)),
                ("phone", models.CharField(blank=True, db_index=True, max_length=16, null=True)),
                (
                    "phone_hash",
                    models.CharField(blank=True, db_index=True, max_length=64, null=True),
                ),
                ("msisdn_prefix", models.CharField(blank=True, max_length=16, null=True)),
                ("msisdn_suffix", models.CharField(blank=True, max_length=16, null=True)),
                ("payer_name", models.CharField(blank=True, max_length=255, null=True)),
                ("trans_time", models.DateTimeField(blank=True, null=True)),
                (
                    "org_account_balance",
                    models.DecimalField(blank=True, decimal_places=2, max_digits=18, null=True),
                ),
                ("flagged", models.BooleanField(db_index=True, default=False)),
                ("flag_reason", models.TextField(blank=True, null=True)),
                ("version", models.IntegerField(default=1)),
                ("created_at", models.DateTimeField(db_index=True)),
                ("updated_at", models.DateTimeField()),
            ],
            options={
                "ordering": ["-created_at"],
            },
        ),
        migrations.CreateModel(
            name="Payout",
            fields=[
                (
                    "id",
                    models.CharField(
                        editable=False, max_length=40, primary_key=True, serialize=False
                    ),
                ),
                (
                    "idempotency_key",
                    models.CharField(blank=True, max_length=255, null=True, unique=True),
                ),
                ("request_hash", models.CharField(max_length=64)),
                ("status", models.CharField(db_index=True, max_length=16)),
                ("phone", models.CharField(db_index=True, max_length=16)),
                ("amount", models.BigIntegerField()),
                ("command_id", models.CharField(max_length=32)),
                ("remarks", models.CharField(max_length=100)),
                ("occasion", models.CharField(blank=True, max_length=100, null=True)),
                ("shortcode", models.CharField(max_length=16)),
                ("metadata", models.JSONField(blank=True, null=True)),
                ("originator_conversation_id", models.CharField(max_length=128, unique=True)),
                (
                    "conversation_id",
                    models.CharField(blank=True, db_index=True, max_length=128, null=True),
                ),
                ("ids_verified", models.BooleanField(default=True)),
                ("result_code", models.CharField(blank=True, max_length=32, null=True)),
                ("result_desc", models.TextField(blank=True, null=True)),
                ("receipt", models.CharField(blank=True, db_index=True, max_length=64, null=True)),
                (
                    "paid_amount",
                    models.DecimalField(blank=True, decimal_places=2, max_digits=14, null=True),
                ),
                ("counterparty", models.CharField(blank=True, max_length=255, null=True)),
                ("completed_at", models.DateTimeField(blank=True, null=True)),
                ("failure_reason", models.TextField(blank=True, null=True)),
                ("flagged", models.BooleanField(db_index=True, default=False)),
                ("flag_reason", models.TextField(blank=True, null=True)),
                ("attempts", models.IntegerField(default=0)),
                ("evidence_callback_id", models.CharField(blank=True, max_length=40, null=True)),
                ("verify_at", models.DateTimeField(blank=True, db_index=True, null=True)),
                ("verify_since", models.DateTimeField(blank=True, null=True)),
                ("expired_at", models.DateTimeField(blank=True, null=True)),
                ("next_check_at", models.DateTimeField(blank=True, null=True)),
                ("claimed_until", models.DateTimeField(blank=True, null=True)),
                ("check_count", models.IntegerField(default=0)),
                ("version", models.IntegerField(default=1)),
                ("created_at", models.DateTimeField(db_index=True)),
                ("updated_at", models.DateTimeField()),
            ],
            options={
                "ordering": ["-created_at"],
                "indexes": [
                    models.Index(fields=["status", "next_check_at"], name="pesa_po_status_next")
                ],
            },
        ),
        migrations.AddField(
            model_name="callback",
            name="payout",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="callbacks",
                to="pesa.payout",
            ),
        ),
        migrations.CreateModel(
            name="PayoutEvent",
            fields=[
                ("seq", models.BigAutoField(primary_key=True, serialize=False)),
                ("id", models.CharField(editable=False, max_length=40, unique=True)),
                ("type", models.CharField(db_index=True, max_length=32)),
                ("detail", models.TextField(blank=True, default="")),
                ("data", models.JSONField()),
                ("created_at", models.DateTimeField()),
                (
                    "payout",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="events",
                        to="pesa.payout",
                    ),
                ),
            ],
            options={
                "ordering": ["seq"],
            },
        ),
        migrations.AddField(
            model_name="callback",
            name="receipt",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="callbacks",
                to="pesa.receipt",
            ),
        ),
        migrations.CreateModel(
            name="ReceiptEvent",
            fields=[
                ("seq", models.BigAutoField(primary_key=True, serialize=False)),
                ("id", models.CharField(editable=False, max_length=40, unique=True)),
                ("type", models.CharField(db_index=True, max_length=40)),
                ("detail", models.TextField(blank=True, default="")),
                ("data", models.JSONField()),
                ("created_at", models.DateTimeField()),
                (
                    "receipt",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="events",
                        to="pesa.receipt",
                    ),
                ),
            ],
            options={
                "ordering": ["seq"],
            },
        ),
        migrations.CreateModel(
            name="TransactionStatusQuery",
            fields=[
                ("seq", models.BigAutoField(primary_key=True, serialize=False)),
                ("id", models.CharField(editable=False, max_length=40, unique=True)),
                ("by_originator_id", models.CharField(blank=True, max_length=128, null=True)),
                (
                    "conversation_id",
                    models.CharField(blank=True, max_length=128, null=True, unique=True),
                ),
                (
                    "originator_conversation_id",
                    models.CharField(blank=True, max_length=128, null=True),
                ),
                ("asked_at", models.DateTimeField()),
                ("answered_at", models.DateTimeField(blank=True, null=True)),
                ("worker", models.CharField(blank=True, default="", max_length=100)),
                ("outcome", models.CharField(max_length=16)),
                ("result_code", models.CharField(blank=True, max_length=32, null=True)),
                ("result_desc", models.TextField(blank=True, null=True)),
                ("detail", models.TextField(blank=True, null=True)),
                (
                    "payout",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="status_queries",
                        to="pesa.payout",
                    ),
                ),
            ],
            options={
                "verbose_name": "Transaction Status query",
                "verbose_name_plural": "Transaction Status queries",
                "ordering": ["seq"],
            },
        ),
    ]
