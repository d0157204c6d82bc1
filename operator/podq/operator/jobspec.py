"""From a Job resource's spec to the keyword arguments of podq's engine Job."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from podq.job import JOB_FIELDS

# kopf stores the last handled spec in an annotation and all annotations together are
# capped at 256 KiB; the API server caps objects near 1.5 MiB. Keep job arguments
# well below both: big payloads belong in object storage, referenced from kwargs.
MAX_KWARGS_BYTES = 64 * 1024
# A finished job must outlive the status writer's lag, or the operator would find it
# gone, take it for lost and run it again. 0 (keep forever) is left alone.
MIN_TTL_S = 60

# The spec fields that are not copied as they are: the queue is named, not a Job field;
# the key is derived from the resource when unset; scheduled is an RFC 3339 time.
_MAPPED_BY_HAND = {"queue", "key", "scheduled"}
# camelCase resource field -> engine field, for the fields copied as they are (declared
# with `resource=` in podq.job.Job).
_PLAIN_FIELDS = {
    field.use.resource: name
    for name, field in JOB_FIELDS.items()
    if field.use.resource and name not in _MAPPED_BY_HAND
}


class InvalidJobSpec(ValueError):
    """The spec passed the schema but cannot become a job; `reason` is CamelCase."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def kwargs_size(spec: Mapping[str, Any]) -> int:
    """Bytes of the kwargs as compact JSON, the form in which they travel."""
    kwargs = spec.get("kwargs")
    if kwargs is None:
        return 0
    return len(json.dumps(kwargs, separators=(",", ":")).encode())


def rfc3339_to_epoch(value: str) -> float:
    """Epoch seconds of an RFC 3339 time (the API server already checked the format)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()


def engine_fields(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Keyword arguments for podq.Job built from a validated spec.

    Raises InvalidJobSpec for what the CRD schema cannot express (the kwargs size).
    """
    size = kwargs_size(spec)
    if size > MAX_KWARGS_BYTES:
        raise InvalidJobSpec(
            "KwargsTooLarge",
            f"spec.kwargs is {size} bytes as JSON, more than the {MAX_KWARGS_BYTES} allowed;"
            " store large inputs elsewhere and pass a reference",
        )
    fields: dict[str, Any] = {"key": key}
    for camel, snake in _PLAIN_FIELDS.items():
        if spec.get(camel) is not None:
            fields[snake] = spec[camel]
    backoff = fields.get("retry_backoff")
    if backoff is not None and not isinstance(backoff, bool):
        # the schema cannot type a bool-or-number field (CEL does not see it), so check here
        if not isinstance(backoff, int | float) or backoff < 0:
            raise InvalidJobSpec(
                "InvalidSpec",
                f"spec.retryBackoff must be true, false or a non-negative number of seconds,"
                f" not {backoff!r}",
            )
        fields["retry_backoff"] = float(backoff)
    if 0 < fields.get("ttl", MIN_TTL_S) < MIN_TTL_S:
        fields["ttl"] = MIN_TTL_S
    if spec.get("scheduled"):
        fields["scheduled"] = int(rfc3339_to_epoch(spec["scheduled"]))
    return fields


def queue_name(spec: Mapping[str, Any]) -> str:
    return spec.get("queue") or "default"
