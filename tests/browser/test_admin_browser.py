"""The admin in a real browser: headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connections

from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from tests import paths
from tests.factories import SourceFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = paths.ARTIFACTS
XSS = "<script>window.__owned = true; alert('owned')</script>"


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    # Playwright's sync API keeps an event loop on this thread; the test's own ORM calls are
    # still synchronous and single-threaded here, so Django's async guard can stand down.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()
        # With Playwright's loop on this thread, the test's ORM calls got a connection of their
        # own context, which Django's teardown does not see: close it here, or it outlives the
        # run and the test database cannot be dropped.
        connections.close_all()


def test_an_auditor_finds_a_customer_by_identity_and_reads_an_event(live_server, browser_page, settings):
    settings.DEBUG = False
    source = SourceFactory.create(slug="billing")
    ingest_events(source=source, items=[parse_event(raw) for raw in [
        {"type": "customer.linked", "customer": "cus_42",
         "customer_identities": [{"system": "stripe", "id": "cus_S42"}],
         "actor": "alice@example.com", "description": "linked the stripe account"},
        {"type": "billing.charged", "customer": "cus_42", "actor": "billing-worker",
         "description": "charged 19.99 EUR", "payload": {"amount": 19.99, "currency": "EUR", "note": XSS,
                                                         "invoice": {"lines": [{"sku": "pro", "qty": 1}]}}},
    ]])  # fmt: skip
    user = User.objects.create_user("auditor", password="correct horse battery", is_staff=True)
    # As the Auditors group has (its data migration's rows do not survive a transactional test's flush).
    user.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    page = browser_page
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)  # type: ignore[attr-defined]

    page.goto(f"{live_server.url}/admin/login/")  # type: ignore[attr-defined]
    page.fill("#id_username", "auditor")  # type: ignore[attr-defined]
    page.fill("#id_password", "correct horse battery")  # type: ignore[attr-defined]
    page.click("input[type=submit]")  # type: ignore[attr-defined]
    page.goto(f"{live_server.url}/admin/customers/customer/?q=stripe:cus_S42")  # type: ignore[attr-defined]
    page.click("text=cus_42")  # type: ignore[attr-defined]
    page.wait_for_selector("#timeline")  # type: ignore[attr-defined]
    timeline = page.inner_text("#timeline")  # type: ignore[attr-defined]
    page.click("#timeline >> text=billing.charged >> xpath=.. >> a")  # type: ignore[attr-defined]
    page.wait_for_selector(".json-view")  # type: ignore[attr-defined]
    page.click(".json-view summary >> text=2 keys")  # type: ignore[attr-defined]  # expand a collapsed node
    payload = page.inner_text(".json-view")  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin-event-detail.png"), full_page=True)  # type: ignore[attr-defined]

    assert "billing.charged" in timeline and "customer.linked" in timeline
    assert "19.99" in payload and '"EUR"' in payload and '"sku"' in payload
    assert XSS.replace('"', '\\"') in payload or "<script>window.__owned" in payload  # shown as text
    assert page.evaluate("window.__owned === undefined")  # type: ignore[attr-defined]
    assert dialogs == []
    assert "not yet sealed" in page.inner_text("body")  # type: ignore[attr-defined]


def test_support_staff_see_the_stream_lag_and_its_dead_letters(live_server, browser_page, stream_mode, settings):
    from events.ingest import stream  # noqa: PLC0415
    from events.ingest.drain import Drainer  # noqa: PLC0415

    settings.DEBUG = False
    settings.AUDITSVC_STRICT_EVENT_TYPES = True
    source = SourceFactory.create(slug="billing")
    for name in ("never.registered", "waiting.one", "waiting.two"):
        stream.accept_event(source=source, item=parse_event({"type": name}))
        if name == "never.registered":
            Drainer().run(once=True)  # refused: a dead letter
    user = User.objects.create_user("auditor", password="correct horse battery", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_event"))  # as the Auditors group has
    page: Any = browser_page

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "auditor")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/events/event/")
    summary = page.inner_text("#stream-summary")
    page.click("#stream-summary >> text=Details")
    page.wait_for_selector("#stream-shards")
    lag = page.inner_text("#stream-lag")
    letters = page.inner_text("#dead-letters")
    page.screenshot(path=str(ARTIFACTS / "admin-stream.png"), full_page=True)

    assert "2 events waiting" in summary and "1 dead letter" in summary
    assert "2 events waiting to be stored" in lag
    assert "never.registered" in letters and "unknown_event_type" in letters
    assert "Requeue" not in letters  # auditors read; only superusers requeue


def test_the_first_page_shows_the_logs_health(live_server, browser_page, settings):
    from events.ingest import type_counts  # noqa: PLC0415

    settings.DEBUG = False
    settings.AUDITSVC_TYPE_COUNT_FLUSH_SECONDS = 0
    billing = SourceFactory.create(slug="billing")
    ingest_events(source=billing, items=[parse_event({"type": name}) for name in
                                         ["billing.charged"] * 30 + ["billing.refunded"] * 4])  # fmt: skip
    type_counts.flush()
    user = User.objects.create_user("auditor", password="correct horse battery", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_event"))  # as the Auditors group has
    page: Any = browser_page

    page.goto(f"{live_server.url}/")  # leads to the admin, then its login
    page.fill("#id_username", "auditor")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.wait_for_selector("#events-per-hour")
    bars = page.locator("#events-per-hour rect.bar")
    heights = [float(bars.nth(n).get_attribute("height")) for n in range(bars.count())]
    busiest = page.inner_text("#busiest-types table")
    seals = page.inner_text("#seal-state")
    chart = page.locator("#events-per-hour").bounding_box()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin-index.png"), full_page=True)

    assert len(heights) == 48 and heights[-1] > 0 and heights[:-1] == [0.0] * 47  # this hour's 34 events
    assert chart["width"] > 600 and chart["height"] > 100  # drawn, not collapsed
    assert busiest.split()[:4] == ["billing.charged", "30", "billing.refunded", "4"]
    assert "34 events" in seals and "none yet" in seals
    page.click("#busiest-types >> text=billing.refunded")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 4


def test_an_auditor_reads_a_personal_field_until_the_customer_is_erased(live_server, browser_page, settings):
    from io import StringIO  # noqa: PLC0415

    from django.core.management import call_command  # noqa: PLC0415

    from events import schema_registry  # noqa: PLC0415
    from events.models import Event  # noqa: PLC0415

    settings.DEBUG = False
    schema = {"type": "object", "properties": {"email": {"type": "string", "x-auditsvc": "personal"}}}
    schema_registry.register_schema(type_name="customer.signed_up", schema=schema, actor="t")
    source = SourceFactory.create(slug="accounts")
    raw = {"type": "customer.signed_up", "customer": "cus_7", "payload": {"email": "ana@example.com", "plan": "pro"}}
    event = ingest_events(source=source, items=[parse_event(raw)]).events[0]
    user = User.objects.create_user("auditor", password="correct horse battery", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    page = browser_page
    page.goto(f"{live_server.url}/admin/login/")  # type: ignore[attr-defined]
    page.fill("#id_username", "auditor")  # type: ignore[attr-defined]
    page.fill("#id_password", "correct horse battery")  # type: ignore[attr-defined]
    page.click("input[type=submit]")  # type: ignore[attr-defined]
    event_page = f"{live_server.url}/admin/events/event/{event.id}/change/"

    page.goto(event_page)  # type: ignore[attr-defined]
    before = page.inner_text(".json-view")  # type: ignore[attr-defined]  # the first: the readable payload
    call_command("erase_customer", "cus_7", "--yes", stdout=StringIO())
    page.goto(event_page)  # type: ignore[attr-defined]
    after = page.inner_text(".json-view")  # type: ignore[attr-defined]
    customer_id = Event.objects.get(id=event.id).customer_id
    page.goto(f"{live_server.url}/admin/customers/customer/{customer_id}/change/")  # type: ignore[attr-defined]
    customer = page.inner_text("body")  # type: ignore[attr-defined]

    assert "ana@example.com" in before and '"pro"' in before
    assert "ana@example.com" not in after and "[erased]" in after and '"pro"' in after
    assert "erased 20" in customer
