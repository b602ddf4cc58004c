"""What a daemon tells its operator beyond single events: refused frames, grouped
and explained, at most once a window; and, once, a node whose seeds never answered."""

from __future__ import annotations

from node.health import HINTS, Loneliness, Rejections


def test_refused_frames_are_reported_with_what_they_mean_once_a_window() -> None:
    r = Rejections(window=60.0)
    assert r.report({"frames_in": 10}, 0.0) is None  # nothing refused: nothing said
    said = r.report({"rejected.untrusted-org": 3, "rejected.expired": 1}, 5.0)
    assert said == (
        "refused 4 frame(s) or record(s) since start: 3 untrusted-org ("
        + HINTS["untrusted-org"]
        + "); "
        "1 expired (" + HINTS["expired"] + ")"
    )
    # More within the window: kept for the next report, not said now.
    assert r.report({"rejected.untrusted-org": 5, "rejected.expired": 1}, 30.0) is None
    later = r.report({"rejected.untrusted-org": 5, "rejected.expired": 1}, 70.0)
    assert later == (
        "refused 2 frame(s) or record(s) in the last 60 s or more: 2 untrusted-org ("
        + HINTS["untrusted-org"]
        + ")"
    )
    # Nothing new: silence, however long.
    assert r.report({"rejected.untrusted-org": 5, "rejected.expired": 1}, 500.0) is None
    # A code without a hint is still counted.
    assert r.report({"rejected.something-new": 1}, 600.0) == (
        "refused 1 frame(s) or record(s) in the last 60 s or more: 1 something-new"
    )


def test_a_node_whose_seeds_never_answer_is_told_once_with_its_org() -> None:
    alone = Loneliness(["tcp://10.0.0.1:7001"], "initech", started=100.0, after=15.0)
    assert alone.report(0, 110.0) is None  # too early to worry
    said = alone.report(0, 116.0)
    assert said is not None
    assert "still no peer 15 s after start" in said
    assert "tcp://10.0.0.1:7001" in said and "'initech'" in said
    assert alone.report(0, 200.0) is None  # once


def test_a_node_with_peers_or_without_seeds_is_never_told() -> None:
    found = Loneliness(["tcp://10.0.0.1:7001"], "acme", started=0.0)
    assert found.report(2, 1.0) is None
    assert found.report(0, 100.0) is None  # it had company: a later loss is membership's
    assert Loneliness([], "acme", started=0.0).report(0, 100.0) is None


def test_refused_records_and_ignored_offers_are_reported_but_late_versions_are_not() -> None:
    """A partner whose record offers a capability out of its scope is kept without that
    offer; a record of an untrusted org is dropped. Both used to be silent (only
    counters), unlike refused frames. An older record version arriving is gossip."""
    r = Rejections(window=60.0)
    counters = {
        "dropped.stale-record": 40,
        "dropped.untrusted-org": 2,
        "rejected.untrusted-org": 1,
        "records.offers_ignored": 3,
    }
    said = r.report(counters, 5.0)
    assert said == (
        "refused 6 frame(s) or record(s) since start: 3 offers-ignored ("
        + HINTS["offers-ignored"]
        + "); 3 untrusted-org ("
        + HINTS["untrusted-org"]
        + ")"
    )


def test_the_certificate_clock_warns_at_each_step_and_when_expired() -> None:
    from node.health import CertificateClock

    day = 86400.0
    clock = CertificateClock(not_before=0.0, not_after=100 * day, window=600.0)
    assert clock.report(0.0) is None  # 100 days left: nothing to say
    week = clock.report(95 * day)
    assert week is not None and "expires in 5.0 days" in week
    assert clock.report(95.5 * day) is None  # said for this step
    hours = clock.report(99.5 * day)
    assert hours is not None and "expires in 12.0 hours" in hours
    assert clock.report(99.6 * day) is None
    assert "expires in 30 minutes" in (clock.report(100 * day - 1800) or "")
    gone = clock.report(100 * day + 1)
    assert gone is not None and "expired at" in gone and "mesh-node reload" in gone
    assert clock.report(100 * day + 300) is None  # once a window
    assert clock.report(100 * day + 700) == gone  # and again after it


def test_a_short_lived_certificate_is_warned_about_only_near_its_end() -> None:
    """Certificates of a day warned 'expires in 1.0 days' at every start (the 7-day
    step); steps longer than a quarter of the lifetime are skipped."""
    from node.health import CertificateClock

    clock = CertificateClock(not_before=0.0, not_after=86400.0)
    assert clock.report(60.0) is None  # a fresh certificate of a day: nothing to say
    assert clock.report(80000.0) is None  # 1.8 h left
    assert "expires in 50 minutes" in (clock.report(83400.0) or "")
