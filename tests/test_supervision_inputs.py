"""ApprovalDesk.pending(): a waiting task's input as JSON (the value itself), with a
bounded text preview; an input JSON cannot hold is None, its repr the preview."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from node.handlers import Task
from node.supervision import PREVIEW, ApprovalDesk


def _pending(value: Any) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        desk = ApprovalDesk()
        task = Task("a" * 32, "pay", value, time.time() + 60, requester="r", risk="high")
        wait = asyncio.ensure_future(desk.wait(task))
        await asyncio.sleep(0)
        (row,) = desk.pending()
        wait.cancel()
        await asyncio.gather(wait, return_exceptions=True)
        return row

    return asyncio.run(main())


def test_the_input_is_the_value_itself_and_the_listing_is_json() -> None:
    """It was repr(input): "{'amt': 100}", a Python repr in a JSON string."""
    row = _pending({"amt": 100, "note": None, "ok": True})
    assert row["input"] == {"amt": 100, "note": None, "ok": True}
    assert row["input_preview"] == '{"amt": 100, "note": null, "ok": true}'
    assert json.loads(json.dumps(row, allow_nan=False))["input"]["amt"] == 100
    assert _pending(2)["input"] == 2 and _pending("2")["input"] == "2"


def test_a_long_input_is_whole_but_its_preview_is_cut() -> None:
    value = {"text": "x" * 1000}
    row = _pending(value)
    assert row["input"] == value
    assert len(row["input_preview"]) == PREVIEW and row["input_preview"].endswith("…")


def test_an_input_json_cannot_hold_is_none_with_its_repr_as_preview() -> None:
    for value in (b"\x00raw", float("nan"), {(1, 2): "tuple key"}):
        row = _pending(value)
        assert row["input"] is None, value
        assert row["input_preview"] == repr(value)
        json.dumps(row, allow_nan=False)  # the listing stays strict JSON
