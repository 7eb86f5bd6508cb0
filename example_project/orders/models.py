"""An order is the data a view saves before it hands the slow work to a job."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Order(models.Model):
    email = models.EmailField()
    item = models.CharField(max_length=200)
    quantity = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by the send_order_confirmation job, so it tells whether the job has run.
    confirmation_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Order {self.pk}: {self.quantity} x {self.item}"
