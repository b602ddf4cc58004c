"""``compare_digests`` skips the entries both sides hold alike (set operations) and
must answer exactly as the entry-by-entry comparison it replaced, in the same
order, for any pair of digests: alike, different, with suspects and dead members,
and with a digest that repeats a node id (which takes the full path)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.membership.pushpull import compare_digests
from protocols.membership.state import ALIVE, DEAD, LEFT, SUSPECT

Entry = tuple[str, int, int, int]


def reference(
    ours: Sequence[Entry] | Mapping[str, Entry], theirs: Iterable[Entry], self_id: str
) -> tuple[list[str], list[str]]:
    """The comparison as written before the fast path (every entry read in Python)."""
    their_versions: dict[str, tuple[int, int]] = {}
    their_dead: set[str] = set()
    their_suspects: set[str] = set()
    for node_id, inc, seq, status in theirs:
        their_versions[node_id] = (inc, seq)
        if status == DEAD:
            their_dead.add(node_id)
        elif status == SUSPECT:
            their_suspects.add(node_id)
    if not isinstance(ours, Mapping):
        ours = {entry[0]: entry for entry in ours}
    send: list[str] = []
    for node_id, inc, seq, status in ours.values():
        if status == DEAD:
            continue
        theirs_v = their_versions.get(node_id)
        newer = theirs_v is None or theirs_v < (inc, seq)
        vouched = status != SUSPECT or (theirs_v is not None and node_id not in their_dead)
        if newer and vouched:
            send.append(node_id)
    want = []
    for node_id, version in their_versions.items():
        if node_id == self_id or node_id in their_dead:
            continue
        mine = ours.get(node_id)
        if mine is None:
            if node_id not in their_suspects:
                want.append(node_id)
            continue
        if version > (mine[1], mine[2]) and (node_id not in their_suspects or mine[3] != DEAD):
            want.append(node_id)
    return send, want


IDS = [f"n{i:02d}" for i in range(40)]
entry = st.tuples(
    st.sampled_from(IDS),
    st.integers(0, 2),
    st.integers(0, 2),
    st.sampled_from([ALIVE, SUSPECT, DEAD, LEFT]),
)


@st.composite
def digest_pairs(draw: st.DrawFn) -> tuple[dict[str, Entry], list[Entry]]:
    ours = {e[0]: e for e in draw(st.lists(entry, max_size=40))}
    # Theirs: mostly copies of ours (a formed mesh), some changed, some of their own.
    unique = draw(st.booleans())  # an honest peer sends each id once
    theirs: list[Entry] = []
    for e in ours.values():
        choice = draw(st.integers(0, 4 if not unique else 3))
        if choice in (0, 1, 4):
            theirs.append(e)
        if choice in (2, 4):  # changed (choice 4: a second entry for the same id)
            theirs.append((e[0], *draw(entry)[1:]))
    theirs += draw(st.lists(entry, max_size=20))
    if unique:
        theirs = list({e[0]: e for e in theirs}.values())
    order = draw(st.permutations(range(len(theirs))))
    return ours, [theirs[i] for i in order]


@settings(max_examples=400, deadline=None)
@given(digest_pairs(), st.sampled_from(["n00", "n01", "me"]))
def test_same_answer_as_the_entry_by_entry_comparison(
    pair: tuple[dict[str, Entry], list[Entry]], self_id: str
) -> None:
    ours, theirs = pair
    assert compare_digests(ours, theirs, self_id) == reference(ours, theirs, self_id)
    assert compare_digests(list(ours.values()), iter(theirs), self_id) == reference(
        ours, theirs, self_id
    )


def test_a_large_alike_digest_asks_for_nothing_and_finds_the_one_difference() -> None:
    ours = {f"n{i:04d}": (f"n{i:04d}", 1, 3, ALIVE) for i in range(1000)}
    theirs = list(ours.values())
    assert compare_digests(ours, theirs, "me") == ([], [])
    theirs[500] = ("n0500", 1, 4, ALIVE)
    del theirs[10]
    assert compare_digests(ours, theirs, "me") == (["n0010"], ["n0500"])
