from __future__ import annotations

import pytest

from consumer.fleet.lease_table import LeaseTable
from infra.local.limits import Limits
from infra.local.stack import LocalStack

from .harness import TABLE


@pytest.fixture(scope="module")
def stack():
    """The local stack for one test module, with a lease table the harness observes."""
    with LocalStack(limits=Limits(getmedia_idle_seconds=1.0)) as local:
        LeaseTable(local.client("dynamodb"), TABLE, "observer").ensure_table()
        yield local
