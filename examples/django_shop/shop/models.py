from django.db import models

PRODUCTS = {"kikoi": ("Kikoi beach wrap", 10), "kiondo": ("Kiondo basket", 25)}


class Order(models.Model):
    sku = models.CharField(max_length=20)
    amount = models.PositiveIntegerField()
    phone = models.CharField(max_length=16)
    payment_id = models.CharField(max_length=40, blank=True, default="")
    paid = models.BooleanField(default=False)
    failed_reason = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    @property
    def reference(self) -> str:
        return f"ORDER{self.pk}"
