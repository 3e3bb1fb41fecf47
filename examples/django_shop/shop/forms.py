from django import forms

from pesa import ValidationError
from pesa.daraja import normalize_msisdn


class CheckoutForm(forms.Form):
    phone = forms.CharField(label="M-Pesa phone number", max_length=20)

    def clean_phone(self) -> str:
        try:
            return normalize_msisdn(self.cleaned_data["phone"])  # 07..., +254..., 01...
        except ValidationError as err:
            raise forms.ValidationError(err.rule) from err
