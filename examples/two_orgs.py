"""Two organizations federating: acme and globex trust each other's root keys,
each for some capabilities only.

globex offers `translate` and `summarize`. globex's trust policy lets acme's nodes
request `translate*` only (and offer nothing); acme's policy accepts globex's offers
of `translate*` and `summarize` and lets globex's nodes request nothing. So acme's
node gets its translation, and its request for `summarize` is refused by globex
(`not-permitted`) at once. Each node carries a certificate from its own org;
nothing is shared but the two public root keys.
Run: `python examples/two_orgs.py`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from node import LocalOrg, Node, Task
from protocols.errors import ContractNetError
from protocols.trust import OrgPolicy, TrustStore


async def main() -> None:
    acme, globex = LocalOrg("acme"), LocalOrg("globex")

    # globex's node: trusts its own org fully, and lets acme request translate* only
    g_ident, g_cert = globex.issue("globex-translator")
    g_trust = TrustStore(
        [
            globex.policy(),
            OrgPolicy("acme", acme.signer.public_key, may_offer=(), may_request=("translate*",)),
        ]
    )
    translator = Node(g_ident, g_cert, g_trust, preset="local")

    @translator.capability("translate")
    async def translate(task: Task) -> Any:
        table = {"hello": "bonjour", "world": "monde"}
        return " ".join(table.get(w, w) for w in str(task.input).split())

    @translator.capability("summarize")
    async def summarize(task: Task) -> Any:
        return str(task.input)[:20]

    async with translator:
        # acme's node: takes globex's offers of translate* and summarize; globex's
        # nodes may request nothing from acme
        a_ident, a_cert = acme.issue("acme-app")
        a_trust = TrustStore(
            [
                acme.policy(),
                OrgPolicy(
                    "globex",
                    globex.signer.public_key,
                    may_offer=("translate*", "summarize"),
                    may_request=(),
                ),
            ]
        )
        app = Node(a_ident, a_cert, a_trust, seeds=[translator.endpoint], preset="local")
        async with app:
            if not await app.wait_for_peers(1):
                raise SystemExit("no peer joined within 10 s: check the seeds and the trust stores")
            peer = app.peers()[0]
            print(f"acme-app sees {peer['org']} node {peer['node_id'][:12]}")
            result = await app.request("translate", "hello world", timeout=10)
            print("translated by globex:", result.value)
            try:
                await app.request("summarize", "a long report", timeout=10)
            except ContractNetError as exc:
                print("summarize refused by globex's policy:", exc)
            else:
                raise SystemExit("globex ran summarize for acme: its policy was not applied")


if __name__ == "__main__":
    asyncio.run(main())
