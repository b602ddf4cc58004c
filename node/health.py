"""What a daemon tells its operator about the mesh around it, beyond single events.

Two situations are silent in the protocol and common in practice:

* **Refused frames.** A peer whose org is not in our trust store, a clock hours off,
  a forged or replayed frame: each is refused and counted (``rejected.<code>`` in
  ``mesh-node status --json``), and nothing else is said. ``Rejections`` turns the
  counters into one warning per window, with what each code most likely means.
* **A node alone.** A node whose seeds never answer (down, a wrong endpoint, or a seed
  that does not trust our org and so drops our join) runs on with no peer.
  ``Loneliness`` says so once, a while after start, naming the seeds and our org.

* **Peers' records refused or narrowed.** A record from a peer is checked against the
  trust store when it is applied: one whose org is not trusted is dropped
  (``dropped.<code>``), and the offers a partner's certificate or its org's policy
  here does not allow are ignored (``records.offers_ignored``; the peer is kept).
  ``Rejections`` reports them with the refused frames.
* **Our own certificate running out.** ``CertificateClock`` warns as the end date
  nears and once it has passed: peers then refuse every frame as ``expired``, which
  they can only read as a clock problem.

All are pure (time is an argument); the daemon polls them (``node.daemon``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

__all__ = ["HINTS", "CertificateClock", "Loneliness", "Rejections"]

#: What a refusal code most likely means for an operator.
HINTS: dict[str, str] = {
    "untrusted-org": "the sender's org is not in this node's trust store",
    "expired": "older than the frame window (a clock behind, a long delay) or a "
    "certificate past its end date",
    "not-yet-valid": "from the future: the sender's clock is ahead (check NTP)",
    "bad-signature": "forged or corrupted",
    "replayed": "the same frame twice: a replay, or a duplicating network",
    "revoked": "a certificate on the org's revocation list",
    "bad-certificate": "a certificate that does not check",
    "unknown-certificate": "a certificate reference this node has not seen",
    "wrong-recipient": "addressed to another node (a stale endpoint?)",
    "not-permitted": "the sender's org may not offer or request that capability",
    "too-large": "over the frame limit",
    "malformed": "not a frame",
    "unknown-kind": "a message kind this version does not know",
    "offers-ignored": "a peer's record offers capabilities its certificate or its org's "
    "policy here does not allow: those offers are ignored, the peer is kept",
}

#: Counters that ``Rejections`` reports, and the code each is reported under:
#: refused frames, refused peer records (not ``dropped.stale-record``: an older
#: version arriving late is ordinary gossip), and records kept without some offers.
_REPORTED_PREFIXES = ("rejected.", "dropped.")
_NOT_REPORTED = frozenset({"dropped.stale-record", "dropped.wrong-recipient"})
_OFFERS_IGNORED = "records.offers_ignored"


def _reported(counters: Mapping[str, int]) -> dict[str, int]:
    """Totals by code of what ``Rejections`` reports."""
    out: dict[str, int] = {}
    for name, value in counters.items():
        if name == _OFFERS_IGNORED:
            code = "offers-ignored"
        elif name.startswith(_REPORTED_PREFIXES) and name not in _NOT_REPORTED:
            code = name.split(".", 1)[1]
        else:
            continue
        out[code] = out.get(code, 0) + value
    return out


class Rejections:
    """Refused frames since the last report, at most one report per ``window`` s."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._seen: dict[str, int] = {}
        self._reported_at: float | None = None

    def report(self, counters: Mapping[str, int], now: float) -> str | None:
        """A one-line warning if frames were refused since the last report and the
        window has passed (the counts then start again); else None."""
        if self._reported_at is not None and now - self._reported_at < self.window:
            return None
        totals = _reported(counters)
        new = {
            code: value - self._seen.get(code, 0)
            for code, value in totals.items()
            if value > self._seen.get(code, 0)
        }
        if not new:
            return None
        self._seen.update({code: totals[code] for code in new})
        first = self._reported_at is None
        self._reported_at = now
        parts = []
        for code, n in sorted(new.items(), key=lambda kv: (-kv[1], kv[0])):
            hint = HINTS.get(code)
            parts.append(f"{n} {code}" + (f" ({hint})" if hint else ""))
        since = "since start" if first else f"in the last {self.window:.0f} s or more"
        total = sum(new.values())
        return f"refused {total} frame(s) or record(s) {since}: " + "; ".join(parts)


class Loneliness:
    """Says once, ``after`` s after start, that a node given seeds still has no peer."""

    def __init__(self, seeds: Sequence[str], org: str, started: float, after: float = 15.0) -> None:
        self.seeds = tuple(seeds)
        self.org = org
        self.after = after
        self.due = started + after
        self._done = not self.seeds  # no seeds: alone by design (or mDNS will tell)

    def report(self, peers: int, now: float) -> str | None:
        if self._done:
            return None
        if peers > 0:
            self._done = True  # found company: nothing to say, ever
            return None
        if now < self.due:
            return None
        self._done = True
        shown = ", ".join(self.seeds[:3]) + (", ..." if len(self.seeds) > 3 else "")
        return (
            f"still no peer {self.after:.0f} s after start: no seed answered ({shown}). "
            f"Is a seed up at that endpoint, and does its trust store hold org "
            f"{self.org!r}? (a node drops every frame of an org it does not trust, "
            "joins included)"
        )


class CertificateClock:
    """Warns as this node's certificate nears its end date, and once it is past.

    One warning as each step is crossed (under 7 days left, under 1 day, under 1
    hour; a step longer than a quarter of the certificate's lifetime is skipped, so
    that a short-lived certificate does not warn at every start), and once expired,
    again every ``window`` s (the node is cut off until it has a new certificate)."""

    STEPS = (7 * 86400.0, 86400.0, 3600.0)

    def __init__(self, not_before: float, not_after: float, window: float = 600.0) -> None:
        self.not_after = not_after
        self.window = window
        lifetime = not_after - not_before
        self.steps = tuple(s for s in self.STEPS if s <= lifetime / 4)
        self._said: int | None = None  # the deepest step warned about
        self._expired_said: float | None = None

    def report(self, now: float) -> str | None:
        left = self.not_after - now
        end = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.not_after))
        if left <= 0:
            if self._expired_said is not None and now - self._expired_said < self.window:
                return None
            self._expired_said = now
            return (
                f"this node's certificate expired at {end}: every peer now refuses its "
                "frames (as expired); issue a new certificate and run `mesh-node reload`"
            )
        crossed = [i for i, step in enumerate(self.steps) if left < step]
        if not crossed or (self._said is not None and crossed[-1] <= self._said):
            return None
        self._said = crossed[-1]
        hours = left / 3600
        if hours >= 48:
            when = f"{hours / 24:.1f} days"
        elif hours >= 1:
            when = f"{hours:.1f} hours"
        else:
            when = f"{max(1, round(left / 60))} minutes"
        return (
            f"this node's certificate expires in {when} ({end}): issue a new one and "
            "run `mesh-node reload` before then, or peers will refuse its frames"
        )
