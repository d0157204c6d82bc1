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


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        annotations = body.metadata.annotations
        for full_key in self.make_keys(self.key, body=body):
            decoded = _decode(annotations.get(full_key))
            if decoded is not None:
                return decoded  # type: ignore[return-value]
        return None


class ProgressStorage(kopf.AnnotationsProgressStorage):
    def fetch(self, *, key: Any, body: kopf.Body) -> Any:
        annotations = body.metadata.annotations
        for full_key in self.make_keys(key, body=body):
            decoded = _decode(annotations.get(full_key))
            if decoded is not None:
                return decoded
        return None
