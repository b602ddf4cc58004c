"""Tune membership in the simulator, then deploy the very same settings.

A `[membership]` table means the same thing in a scenario file and in a daemon's
node.toml. This example simulates 40 nodes with a table (a crash, some loss), reads the
report, then starts two real nodes on loopback with the same table and runs a task.
Run: `python examples/tune_then_deploy.py`.
"""

from __future__ import annotations

import asyncio
import tomllib
from dataclasses import asdict

from node import LocalOrg, Node, Task
from protocols.membership.config import tuned
from simulations.runner import run_scenario
from simulations.scenario import validate_scenario

TABLE = """
[membership]
preset = "local"
probe_interval = "500ms"
probe_timeout = "200ms"
fanout = 4
"""


def simulate(table: dict[str, object]) -> None:
    scenario = validate_scenario(
        {
            "run": {"nodes": 40, "duration": "20s", "liveness": "auto", "crypto": "fast"},
            "network": {"lan": {"loss": 0.02}},
            "faults": {"crash_fraction": 0.05, "restart_fraction": 0.0},
            "membership": table,
        },
        "example",
    )
    report = run_scenario(scenario).report
    failed = [name for name, verdict in report["checkers"].items() if verdict == "fail"]
    detection = report["detection"]
    print(f"simulated {report['nodes']} nodes: {failed if failed else 'every checker passes'}")
    print(
        "  first suspicion after",
        detection["first_suspicion_median_periods"],
        "probe periods (median); dead everywhere within",
        detection["dead_everywhere_p99_s"],
        "s (p99)",
    )


async def deploy(table: dict[str, object]) -> None:
    settings = tuned(table)  # what a node.toml with this table gives a daemon
    org = LocalOrg("acme")
    worker = Node.from_org(org, "worker", membership=settings)

    @worker.capability("echo")
    async def echo(task: Task) -> object:
        return task.input

    async with worker:
        client = Node.from_org(org, "client", seeds=[worker.endpoint], membership=settings)
        async with client:
            if not await client.wait_for_peers(1):
                raise SystemExit("no peer joined within 10 s: check the seeds and the trust stores")
            result = await client.request("echo", "hi", timeout=10)
            assert worker.runtime is not None
            used = worker.runtime.core.config.membership  # type: ignore[attr-defined]
            print("task ran on worker:", result.executor == worker.node_id)
            print(
                "deployed nodes run with the simulated settings:", asdict(used) == asdict(settings)
            )


def main() -> None:
    table = tomllib.loads(TABLE)["membership"]
    simulate(table)
    asyncio.run(deploy(table))


if __name__ == "__main__":
    main()
