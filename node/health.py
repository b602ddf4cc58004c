"""What a daemon tells its operator about the mesh around it, beyond single events.

Two situations are silent in the protocol and common in practice:

* **Refused frames.** A peer whose org is not in our trust store, a clock hours off,
  a forged or replayed frame: each is refused and counted (``rejected.<code>`` in
  ``mesh-node status --json``), and nothing else is said. ``Rejections`` turns the
  counters into one warning per window, with what each code most likely means.
* **A node alone.** A node whose seeds never answer (down, a wrong endpoint, or a seed
  that does not trust our org and so drops our join) runs on with no peer.
  ``Loneliness`` says so once, a while after start, naming the seeds and our org.

Both are pure (time is an argument); the daemon polls them (``node.daemon``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["HINTS", "Loneliness", "Rejections"]

#: What a refusal code most likely means for an operator.
HINTS: dict[str, str] = {
    "untrusted-org": "the sender's org is not in this node's trust store",
    "expired": "older than the frame window: a clock behind, or a long delay",
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
}


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
        new = {
            name.removeprefix("rejected."): value - self._seen.get(name, 0)
            for name, value in counters.items()
            if name.startswith("rejected.") and value > self._seen.get(name, 0)
        }
        if not new:
            return None
        self._seen.update({f"rejected.{code}": counters[f"rejected.{code}"] for code in new})
        first = self._reported_at is None
        self._reported_at = now
        parts = []
        for code, n in sorted(new.items(), key=lambda kv: (-kv[1], kv[0])):
            hint = HINTS.get(code)
            parts.append(f"{n} {code}" + (f" ({hint})" if hint else ""))
        since = "since start" if first else f"in the last {self.window:.0f} s or more"
        total = sum(new.values())
        return f"refused {total} frame(s) {since}: " + "; ".join(parts)


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
