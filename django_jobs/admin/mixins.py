"""The base of the ModelAdmin mixins in this package: to mypy, the ModelAdmin they
are mixed into (so ``self.admin_site``, ``self.message_user`` ... type-check); at
run time ``object``, so each admin class keeps the MRO it declares."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin as AdminMixin
else:
    AdminMixin = object

__all__ = ["AdminMixin"]
