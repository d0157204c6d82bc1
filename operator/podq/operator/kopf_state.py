"""kopf's state annotations, read so that what a tenant writes there cannot stop kopf.

kopf keeps the last handled spec and handler progress in annotations under the podq.dev/
prefix. Anyone who may patch a Job or CronJob can rewrite them: text that is not JSON,
or JSON nested 20,000 levels deep, made kopf raise on every event of that resource
before any podq handler ran, so its deletion was never seen and its finalizer stayed
(tests/kube/bad_input_cases.py, "tenant writes ..."). Here such a value reads as absent:
kopf treats the resource as never handled, which for podq's event handlers and
daemons changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import kopf


def _decode(encoded: object) -> dict[str, Any] | None:
    if not isinstance(encoded, str):
        return None
    try:
        decoded = json.loads(encoded)
    except (ValueError, RecursionError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _first_decoded(body: kopf.Body, keys: Iterable[str]) -> dict[str, Any] | None:
    """The first of these annotations that decodes to a JSON object, or None."""
    annotations = body.metadata.annotations
    return next((decoded for key in keys
                 if (decoded := _decode(annotations.get(key))) is not None), None)


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return _first_decoded(body, self.make_keys(self.key, body=body))  # type: ignore[return-value]


class ProgressStorage(kopf.AnnotationsProgressStorage):
    def fetch(self, *, key: Any, body: kopf.Body) -> Any:
        return _first_decoded(body, self.make_keys(key, body=body))
