"""Forms of the dead-letter pages: edited arguments, and the reason for a discard."""

from __future__ import annotations

import json

from django import forms


class EditArgumentsForm(forms.Form):
    args = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}), help_text="A JSON list."
    )
    kwargs = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}), help_text="A JSON object."
    )

    def _json(self, field: str, kind: type, label: str):
        try:
            value = json.loads(self.cleaned_data[field])
        except ValueError as error:
            raise forms.ValidationError(f"Not valid JSON: {error}") from None
        except RecursionError:
            raise forms.ValidationError(
                "Nested too deeply: lists or objects thousands of levels inside each other."
            ) from None
        if not isinstance(value, kind):
            raise forms.ValidationError(f"Must be a JSON {label}.")
        return value

    def clean_args(self):
        return self._json("args", list, "list")

    def clean_kwargs(self):
        return self._json("kwargs", dict, "object")


class DiscardForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Kept on each dead letter and in the admin log.",
    )
