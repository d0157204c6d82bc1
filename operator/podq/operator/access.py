"""Which namespaces may put Jobs on which queues (docs/security.md).

Queue names are global on a Redis; RBAC only says who may create a Job resource in a
namespace, not which workers it reaches. So the operator enqueues a Job only on a queue
granted to its namespace. The grants come from the cluster admin (the chart renders one
`--allow-queue QUEUE=NS,...` per queue from its worker pools), never from anything a
tenant can write: a Deployment or an annotation in a tenant's namespace could claim any
queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from podq.queue.keys import check_queue_name

ANY_NAMESPACE = "*"
REFUSED = "QueueNotAllowed"


@dataclass(frozen=True)
class QueueAccess:
    """Grants of queues to namespaces. `open` allows everything (single-tenant use)."""

    grants: Mapping[str, frozenset[str]] = field(default_factory=dict)
    open: bool = False

    @classmethod
    def parse(cls, specs: Iterable[str], mode: str | None = None) -> QueueAccess:
        """From `QUEUE=NS[,NS...]` specs (`*` for every namespace). Mode `open` allows
        every queue to every namespace; the default is explicit once a grant is given,
        open when none is. Raises ValueError naming a malformed spec."""
        grants: dict[str, set[str]] = {}
        for spec in specs:
            queue, sep, namespaces = spec.partition("=")
            names = {n.strip() for n in namespaces.split(",") if n.strip()}
            if not sep or not names:
                raise ValueError(f"--allow-queue {spec!r}: use QUEUE=NAMESPACE[,NAMESPACE...]")
            try:
                check_queue_name(queue)
            except ValueError as invalid:
                raise ValueError(f"--allow-queue {spec!r}: {invalid}") from None
            grants.setdefault(queue, set()).update(names)
        if mode not in (None, "open", "explicit"):
            raise ValueError(f"--queue-access {mode!r}: use open or explicit")
        is_open = mode == "open" or (mode is None and not grants)
        return cls({q: frozenset(n) for q, n in grants.items()}, is_open)

    def allows(self, namespace: str, queue: str) -> bool:
        if self.open:
            return True
        granted = self.grants.get(queue, frozenset())
        return namespace in granted or ANY_NAMESPACE in granted

    def granted(self, queue: str) -> bool:
        """Whether any namespace may use the queue: only then does the operator listen to
        it or open a connection for it."""
        return self.open or queue in self.grants

    def refusal(self, namespace: str, queue: str) -> tuple[str, str] | None:
        """(reason, message) when namespace may not use queue, else None."""
        if self.allows(namespace, queue):
            return None
        mine = sorted(q for q, n in self.grants.items() if namespace in n or ANY_NAMESPACE in n)
        return REFUSED, (
            f"spec.queue: namespace {namespace} may not use queue {queue!r}"
            f" (queues it may use: {', '.join(mine) or 'none'}); the cluster admin grants"
            f" queues to namespaces: chart value workers.pools[].namespaces, operator flag"
            f" --allow-queue")

    def describe(self) -> str:
        if self.open:
            return "open: every namespace may use every queue"
        return "; ".join(f"{q}={','.join(sorted(n))}" for q, n in sorted(self.grants.items()))


# the operator's access when no grant is given (`podq operator` without --allow-queue):
# single-tenant use, every namespace may use every queue
OPEN_ACCESS = QueueAccess(open=True)
