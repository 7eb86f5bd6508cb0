"""Dead letters get their failure group (folded message + fingerprint) and a
resolution note; rows written before are grouped here."""

from django.db import migrations, models

from django_jobs.failures import group_fields

BATCH = 1000


def group_existing_rows(apps, schema_editor):
    dead_letter = apps.get_model("django_jobs", "DeadLetter")
    ungrouped = dead_letter.objects.using(schema_editor.connection.alias).filter(fingerprint="")
    fields = ("job_name", "error_class", "error_message")
    while batch := list(ungrouped.only(*fields).order_by("pk")[:BATCH]):
        for row in batch:
            for field, value in group_fields(*(getattr(row, name) for name in fields)).items():
                setattr(row, field, value)
        dead_letter.objects.bulk_update(batch, ["error_pattern", "fingerprint"])


class Migration(migrations.Migration):
    dependencies = [
        ("django_jobs", "0004_schedule"),
    ]

    operations = [
        migrations.AddField(
            model_name="deadletter",
            name="error_pattern",
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AddField(
            model_name="deadletter",
            name="fingerprint",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AddField(
            model_name="deadletter",
            name="resolution_note",
            field=models.TextField(
                blank=True, help_text="Why it was discarded, as given by whoever discarded it."
            ),
        ),
        migrations.AddIndex(
            model_name="deadletter",
            index=models.Index(fields=["status", "fingerprint"], name="django_jobs_dl_group"),
        ),
        migrations.RunPython(group_existing_rows, migrations.RunPython.noop),
    ]
