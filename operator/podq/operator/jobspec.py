"""From a Job resource's spec to the keyword arguments of podq's engine Job."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from podq.job import JOB_FIELDS
from podq.operator.safejson import depth

# kopf stores the last handled spec in an annotation and all annotations together are
# capped at 256 KiB; the API server caps objects near 1.5 MiB. Keep job arguments
# well below both: big payloads belong in object storage, referenced from kwargs.
MAX_KWARGS_BYTES = 64 * 1024
MAX_META_BYTES = 16 * 1024
# kwargs and meta nest at most this deep (the operator's decoder cuts anything past 100
# levels of the whole object, see safejson.py, so deeper values never reach here intact)
MAX_NESTING = 32
# Bounds of numbers the schema bounds too (an older CRD may not): what Redis, the
# clock and RFC 3339 can hold. Ten years of ttl; a retry delay of at most 30 days.
MAX_TTL_S = 10 * 365 * 24 * 3600
MAX_RETRY_DELAY_S = 30 * 24 * 3600
# scheduled: 1970 to the end of 2999 (UTC), so that every time computed from it prints
MIN_SCHEDULED_S = 0
MAX_SCHEDULED_S = 32503680000 - 1
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


def kwargs_size(spec: Mapping[str, Any], field: str = "kwargs") -> int:
    """Bytes of the kwargs (or another field) as compact JSON, the form it travels in."""
    kwargs = spec.get(field)
    if kwargs is None:
        return 0
    return len(json.dumps(kwargs, separators=(",", ":")).encode())


def rfc3339_to_epoch(value: str) -> float:
    """Epoch seconds of an RFC 3339 time (the API server already checked the format)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()


def _check_payload(spec: Mapping[str, Any], field: str, limit: int, reason: str) -> None:
    nesting = depth(spec.get(field), MAX_NESTING)
    if nesting > MAX_NESTING:
        raise InvalidJobSpec(
            f"{field.capitalize()}TooDeep",
            f"spec.{field} is nested more than {MAX_NESTING} levels deep",
        )
    size = kwargs_size(spec, field)
    if size > limit:
        raise InvalidJobSpec(
            reason,
            f"spec.{field} is {size} bytes as JSON, more than the {limit} allowed;"
            " store large inputs elsewhere and pass a reference",
        )


def _number(spec: Mapping[str, Any], field: str, maximum: float) -> None:
    value = spec.get(field)
    if value is None or isinstance(value, bool):
        return
    if not isinstance(value, int | float) or not math.isfinite(value) or not \
            0 <= value <= maximum:
        raise InvalidJobSpec(
            "InvalidSpec", f"spec.{field} must be a number from 0 to {maximum}, not {value!r}")


def scheduled_epoch(value: Any) -> int:
    """Epoch seconds of spec.scheduled; InvalidJobSpec naming it when out of range."""
    try:
        epoch = rfc3339_to_epoch(str(value))
    except (ValueError, OverflowError, OSError) as error:
        raise InvalidJobSpec(
            "InvalidScheduled", f"spec.scheduled {value!r} is not a usable time: {error}"
        ) from None
    if not MIN_SCHEDULED_S <= epoch <= MAX_SCHEDULED_S:
        raise InvalidJobSpec(
            "InvalidScheduled",
            f"spec.scheduled {value!r} is outside 1970-01-01 to 2999-12-31 (UTC)")
    return int(epoch)


def engine_fields(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Keyword arguments for podq.Job built from a validated spec.

    Raises InvalidJobSpec, naming the field, for what the CRD schema cannot express
    (sizes and nesting of kwargs and meta) or an older CRD did not check (bounds).
    """
    _check_payload(spec, "kwargs", MAX_KWARGS_BYTES, "KwargsTooLarge")
    _check_payload(spec, "meta", MAX_META_BYTES, "MetaTooLarge")
    _number(spec, "ttl", MAX_TTL_S)
    _number(spec, "retryDelay", MAX_RETRY_DELAY_S)
    _number(spec, "ttlSecondsAfterFinished", MAX_TTL_S)
    fields: dict[str, Any] = {"key": key}
    for camel, snake in _PLAIN_FIELDS.items():
        if spec.get(camel) is not None:
            fields[snake] = spec[camel]
    backoff = fields.get("retry_backoff")
    if backoff is not None and not isinstance(backoff, bool):
        # the schema cannot type a bool-or-number field (CEL does not see it), so check here
        if not isinstance(backoff, int | float) or not 0 <= backoff <= MAX_RETRY_DELAY_S:
            raise InvalidJobSpec(
                "InvalidSpec",
                f"spec.retryBackoff must be true, false or a number of seconds from 0 to"
                f" {MAX_RETRY_DELAY_S}, not {backoff!r}",
            )
        fields["retry_backoff"] = float(backoff)
    if 0 < fields.get("ttl", MIN_TTL_S) < MIN_TTL_S:
        fields["ttl"] = MIN_TTL_S
    if spec.get("scheduled"):
        fields["scheduled"] = scheduled_epoch(spec["scheduled"])
    return fields


def queue_name(spec: Mapping[str, Any]) -> str:
    return spec.get("queue") or "default"
