from __future__ import annotations

from django.db import models
from django.db.models.functions import Lower


class Customer(models.Model):
    """A customer of the calling systems, known here by its external id; created on first sight."""

    external_id = models.CharField(max_length=200, unique=True)
    email = models.EmailField(blank=True, default="")
    display_name = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(db_default=models.functions.Now())

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~models.Q(external_id=""), name="customer_external_id_not_empty"),
        ]
        indexes = [
            # Customer search by email, case-insensitive: WHERE lower(email) = lower(?).
            models.Index(Lower("email"), name="customer_email_lower"),
        ]

    def __str__(self) -> str:
        return self.external_id


class CustomerIdentity(models.Model):
    """The same customer's id in another system (e.g. stripe: cus_42); one owner per identity."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="identities")
    system = models.CharField(max_length=100)
    external_id = models.CharField(max_length=200)
    created_at = models.DateTimeField(db_default=models.functions.Now())

    class Meta:
        verbose_name_plural = "customer identities"
        constraints = [
            # Lookup "who is stripe:cus_42?" and the guarantee that one identity has one owner.
            models.UniqueConstraint(fields=["system", "external_id"], name="customer_identity_unique"),
        ]
        indexes = [
            # A customer's identities (customer page, API detail).
            models.Index(fields=["customer"], name="customer_identity_customer"),
            # Admin search by an identity's id alone, whatever the system.
            models.Index(fields=["external_id"], name="customer_identity_external_id"),
        ]

    def __str__(self) -> str:
        return f"{self.system}:{self.external_id}"
