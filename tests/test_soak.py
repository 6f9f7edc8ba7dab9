"""The fault soak (issue 8): a realistic request mix through the middleware and the chaos proxy,
on each transport, reconciled with the table (see tests/soak.py).

``make test`` runs a short soak (150 requests; only a generous time bound, twice the budget);
``make soak`` sets ``SOAK_REQUESTS=2000`` and prints each report, the budget asserted as is.
"""

from __future__ import annotations

import os
from typing import Any
from uuid import uuid4

from soak import Soak, SoakSettings

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "150"))
SEED = int(os.environ.get("SOAK_SEED", "1"))
RATE = float(os.environ.get("SOAK_RATE", "0.25"))  # share of DynamoDB requests with a fault
LONG = "SOAK_REQUESTS" in os.environ


async def test_fault_soak(dynamodb_server: Any, raw: Any, transport: str) -> None:
    table = f"soak_{uuid4().hex[:10]}"
    settings = SoakSettings(requests=REQUESTS, seed=SEED, rate=RATE)
    soak = Soak(raw, dynamodb_server.endpoint_url, dynamodb_server.kind, transport, table, settings)
    try:
        report = await soak.run()
    finally:
        await raw.delete_table(TableName=table)
    text = report.render()
    print("\n" + text)
    bound = report.budget if LONG else 2 * report.budget
    counts = {
        "lost writes": report.lost_writes,
        "applied-but-503": report.applied_but_503,
        "orphan items": report.orphans,
        "answers neither the app's nor a 503": report.not_app,
        "wrong reads": report.wrong_reads,
        "wrong stored state": report.wrong_state,
        "cookie lifetimes disagreeing with the item": report.bad_lifetimes,
    }
    assert all(v == 0 for v in counts.values()) and report.slowest <= bound, "\n" + text
    if RATE:
        assert sum(report.faults.values()) > report.faults["forward"]  # faults were injected
