from django.contrib import admin

from orders.models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("id", "item", "quantity", "email", "created_at", "confirmation_sent_at")
    list_filter = ("created_at", "confirmation_sent_at")
    search_fields = ("email", "item")
    readonly_fields = ("created_at", "confirmation_sent_at")
