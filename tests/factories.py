from __future__ import annotations

from factory.declarations import LazyAttribute, Sequence, SubFactory
from factory.django import DjangoModelFactory

from customers.models import Customer, CustomerIdentity
from events.models import Source


class SourceFactory(DjangoModelFactory[Source]):
    class Meta:
        model = Source
        django_get_or_create = ("slug",)

    slug = Sequence(lambda n: f"service-{n}")
    name = LazyAttribute(lambda o: o.slug.title())


class CustomerFactory(DjangoModelFactory[Customer]):
    class Meta:
        model = Customer

    external_id = Sequence(lambda n: f"cus_{n}")


class CustomerIdentityFactory(DjangoModelFactory[CustomerIdentity]):
    class Meta:
        model = CustomerIdentity

    customer = SubFactory(CustomerFactory)
    system = "stripe"
    external_id = Sequence(lambda n: f"cus_stripe_{n}")
