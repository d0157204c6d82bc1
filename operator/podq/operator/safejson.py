"""JSON decoding that no object the API server (or Redis) hands over can crash.

The API server accepts JSON nested up to 10,000 levels; Python's decoder raises
RecursionError near 1,000, and everything downstream (kopf's deep copies and diffs,
json.dumps of a patch) recurses again. One such Job used to make the operator exit while
decoding its watch event, and crash-loop: every namespace stopped.

`loads` decodes any depth: a value nested deeper than MAX_DEPTH is replaced by the
string TOO_DEEP before decoding, so what the operator holds is always shallow. Its spec
then fails validation (spec.kwargs nested too deeply) like any other bad value.
`install()` makes kopf, aiohttp and kubernetes_asyncio decode with it.
"""

from __future__ import annotations

import json
import re
import types
from typing import Any

MAX_DEPTH = 100  # of a whole object (a Job's kwargs may nest 32: see jobspec.py)
TOO_DEEP = "<podq: nested too deeply, dropped>"
_TOO_DEEP_JSON = json.dumps(TOO_DEEP)
# a JSON string (escapes included), or one bracket
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")
_original_loads = json.loads


def bounded(text: str, max_depth: int = MAX_DEPTH) -> str:
    """The JSON text with every value nested deeper than max_depth replaced by TOO_DEEP."""
    parts: list[str] = []
    depth = 0
    cut_from = -1
    last = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            continue
        if token in "[{":
            depth += 1
            if depth == max_depth + 1:
                cut_from = match.start()
        else:
            if depth == max_depth + 1 and cut_from >= 0:
                parts += [text[last:cut_from], _TOO_DEEP_JSON]
                last = match.end()
                cut_from = -1
            depth -= 1
    parts.append(text[last:])
    return "".join(parts)


def deeper_than(text: str, limit: int) -> bool:
    """Whether the JSON text nests deeper than limit (regular expressions only: each
    pass drops the innermost brackets, at C speed)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(limit):
        shorter = _INNERMOST.sub("", brackets)
        if not shorter or shorter == brackets:
            return False
        brackets = shorter
    return True


def loads(data: str | bytes | bytearray, *args: Any, **kwargs: Any) -> Any:
    """json.loads, except that values nested deeper than MAX_DEPTH become TOO_DEEP."""
    text = data.decode(json.detect_encoding(data)) if isinstance(data, bytes | bytearray) \
        else data
    # cheap test first: fewer brackets than the limit cannot nest deeper than it
    if text.count("{") + text.count("[") > MAX_DEPTH and deeper_than(text, MAX_DEPTH):
        text = bounded(text)
    return _original_loads(text, *args, **kwargs)


def depth(value: Any, limit: int) -> int:
    """How deep value nests (a scalar is 0), counted without recursion up to limit + 1."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


_installed = False


def install() -> None:
    """Make the Kubernetes clients of this process decode with `loads` (idempotent)."""
    global _installed
    if _installed:
        return
    import aiohttp
    import kopf._cogs.clients.api as kopf_api
    import kubernetes_asyncio.client.api_client as kube_api_client

    shim = types.ModuleType("json")
    shim.__dict__.update(json.__dict__)
    shim.loads = loads  # type: ignore[attr-defined]
    kopf_api.json = shim  # type: ignore[attr-defined]  # watch streams
    kube_api_client.json = shim  # type: ignore[attr-defined]  # our own API calls
    defaults = aiohttp.ClientResponse.json.__kwdefaults__  # kopf's lists, patches
    if defaults is not None and "loads" in defaults:
        defaults["loads"] = loads
    _installed = True
