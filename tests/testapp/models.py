from django.db import models


class Effect(models.Model):
    """A side effect a test job leaves in the database, so tests can count runs."""

    key = models.CharField(max_length=200, db_index=True)
    attempt = models.IntegerField(default=0)
