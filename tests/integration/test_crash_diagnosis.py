"""The crash test's post-mortem names where a missing reading is, and says LATE only when the hub still holds it."""

from __future__ import annotations

from crash_diagnosis import OutboxHit, locate, report

ADDRESS = "C0:22:00:00:00:01"


def test_a_reading_in_the_outbox_is_late_with_its_age() -> None:
    [found] = locate(
        [(ADDRESS, "0aff")], journal=[], outbox=[(ADDRESS.lower(), "0AFF", OutboxHit(7, 1, 12.5))], platform={}
    )
    assert found.outbox == (OutboxHit(7, 1, 12.5),)
    assert found.verdict().startswith("LATE: committed in the outbox")
    assert "12.5 s" in found.verdict()


def test_a_reading_only_in_the_journal_is_late() -> None:
    [found] = locate([(ADDRESS, "0aff")], journal=[(ADDRESS, "0aff")], outbox=[], platform={})
    assert found.verdict().startswith("LATE: in the hub's journal")


def test_a_reading_nowhere_in_the_hub_is_not_called_late() -> None:
    [found] = locate(
        [(ADDRESS, "0aff")], journal=[(ADDRESS, "0b00")], outbox=[(ADDRESS, "0b00", OutboxHit(1, 1, 0.0))], platform={}
    )
    assert (found.journal, found.outbox, found.platform) == (0, (), 0)
    assert found.verdict().startswith("NOT IN THE HUB")
    logs = {
        "gateway 3": [f"session {ADDRESS} up", "other device", "SIGKILLED after home reading 4"],
        "home": ["unconfirmed in meter memory at the end: bp-1 1"],
    }
    text = report([found], logs)
    assert f"[gateway 3] session {ADDRESS} up" in text
    assert "[home] unconfirmed in meter memory at the end: bp-1 1" in text
    assert "other device" not in text
