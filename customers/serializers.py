from __future__ import annotations

from rest_framework import serializers

from customers.models import Customer, CustomerIdentity


class CustomerIdentitySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    id = serializers.CharField(source="external_id")

    class Meta:
        model = CustomerIdentity
        fields = ["system", "id"]


class CustomerSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    identities = CustomerIdentitySerializer(many=True, read_only=True)

    class Meta:
        model = Customer
        fields = ["external_id", "email", "display_name", "created_at", "identities"]


class CustomerDetailSerializer(CustomerSerializer):
    first_event_at = serializers.DateTimeField(allow_null=True)
    last_event_at = serializers.DateTimeField(allow_null=True)
    event_count = serializers.IntegerField()

    class Meta(CustomerSerializer.Meta):
        fields = [*CustomerSerializer.Meta.fields, "first_event_at", "last_event_at", "event_count"]
