"""SAQ's public API, enumerated from the installed `saq` package, and what of it podq
lacks; the deliberate deviations are read from their one home, docs/saq-compatibility.md.

An item is one of:
  `saq.job.Job`                       a public name of a module
  `saq.job.Job.refresh`               a public member of a class (method, property,
                                      attribute set in __init__, dataclass field,
                                      TypedDict key, enum member); podq's must be a
                                      method where SAQ's is one
  `saq.job.Job.refresh(until_complete)` a parameter of a public function or method
                                      (podq's must take it the same way: by name, at
                                      the same position if SAQ's is positional, with a
                                      default if SAQ's has one)
  `saq.job.Job.refresh(until_complete=None)`  a parameter's default (SAQ's value)

`python tests/engine/saq_api.py` prints the figures: items, covered, missing.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import inspect
import re
import sys
import typing as t
from pathlib import Path

SAQ_MODULES = (
    "saq", "saq.job", "saq.queue", "saq.queue.base", "saq.queue.redis", "saq.worker",
    "saq.errors", "saq.types", "saq.utils",
)
DOC = Path(__file__).resolve().parents[2] / "docs" / "saq-compatibility.md"
_NO_DEFAULT = inspect.Parameter.empty


def _public(name: str) -> bool:
    return not name.startswith("_")


def _module_names(module: t.Any) -> list[str]:
    """Names a module defines at its top level (def, class, assignment) or exports in
    __all__; what it merely imports is another module's."""
    names = set(getattr(module, "__all__", ()))
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(tg.id for tg in node.targets if isinstance(tg, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return sorted(filter(_public, names))


def _class_node(cls: type) -> ast.ClassDef | None:
    try:
        tree = ast.parse(inspect.getsource(sys.modules[cls.__module__]))
    except (OSError, TypeError, KeyError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node
    return None


def _self_attributes(function: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(function):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        while any(isinstance(tg, ast.Tuple | ast.List) for tg in targets):
            targets = [e for tg in targets for e in (
                tg.elts if isinstance(tg, ast.Tuple | ast.List) else [tg])]
        for target in targets:
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == "self"):
                found.add(target.attr)
    return found


def class_members(cls: type) -> list[str]:
    """Public members of cls and of its bases from the same package: methods,
    properties, class attributes and annotations, attributes __init__ sets, dataclass
    fields, TypedDict keys, enum members."""
    package = cls.__module__.split(".")[0]
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith(package):
            continue
        node = _class_node(klass)
        if node is None:
            continue
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(item.name)
                if item.name == "__init__":
                    names |= _self_attributes(item)
            elif isinstance(item, ast.Assign):
                names.update(tg.id for tg in item.targets if isinstance(tg, ast.Name))
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                names.add(item.target.id)
    if dataclasses.is_dataclass(cls):
        names.update(f.name for f in dataclasses.fields(cls))
    return sorted(n for n in names if _public(n))


def _has_member(cls: type, name: str) -> bool:
    if _is_typeddict(cls):
        return name in cls.__annotations__
    if issubclass(cls, enum.Enum):
        return name in cls.__members__
    return hasattr(cls, name) or name in class_members(cls)


def _is_typeddict(obj: t.Any) -> bool:
    return isinstance(obj, type) and t.is_typeddict(obj)


def _signature(obj: t.Any) -> inspect.Signature | None:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = list(signature.parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return signature.replace(parameters=params)


def _callable_of(cls: type, name: str) -> t.Any:
    """The function behind cls.name (None for a property or plain attribute)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            raw = vars(klass)[name]
            if isinstance(raw, property):
                return None
            if isinstance(raw, staticmethod | classmethod):
                return raw.__func__
            return raw if callable(raw) else None
    return None


def _is_method(cls: type, name: str) -> bool:
    return inspect.isfunction(_callable_of(cls, name))


def _positional(signature: inspect.Signature) -> list[str]:
    return [p.name for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _parameter_items(
    where: str, saq_fn: t.Any, podq_fn: t.Any
) -> list[tuple[str, bool]]:
    """(item, covered) for each parameter of saq_fn and each of its defaults."""
    saq_sig = _signature(saq_fn)
    if saq_sig is None:
        return []
    podq_sig = _signature(podq_fn) if podq_fn is not None else None
    podq_params = podq_sig.parameters if podq_sig else {}
    saq_positional = _positional(saq_sig)
    podq_positional = _positional(podq_sig) if podq_sig else []
    items = []
    for p in saq_sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            stars = "*" if p.kind == p.VAR_POSITIONAL else "**"
            covered = any(q.kind == p.kind for q in podq_params.values())
            items.append((f"{where}({stars}{p.name})", covered))
            continue
        q = podq_params.get(p.name)
        covered = q is not None and (
            (p.kind == p.KEYWORD_ONLY and q.kind in (q.KEYWORD_ONLY, q.POSITIONAL_OR_KEYWORD))
            or (p.kind == p.POSITIONAL_OR_KEYWORD and q.kind == q.POSITIONAL_OR_KEYWORD
                and podq_positional.index(p.name) == saq_positional.index(p.name))
            or (p.kind == p.POSITIONAL_ONLY and q.kind in (q.POSITIONAL_ONLY,
                                                           q.POSITIONAL_OR_KEYWORD)
                and podq_positional.index(p.name) == saq_positional.index(p.name))
        ) and (p.default is _NO_DEFAULT or q.default is not _NO_DEFAULT)
        items.append((f"{where}({p.name})", covered))
        if p.default is not _NO_DEFAULT:
            same = covered and q is not None and _same_default(p.default, q.default)
            items.append((f"{where}({p.name}={p.default!r})", same))
    return items


def _plain(value: t.Any) -> t.Any:
    """Enum members as their values (saq.Status.NEW is podq.Status.NEW's counterpart)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):  # a tuple default is SAQ's list, immutable
        return tuple(_plain(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(_plain(v) for v in value)
    return value


def _same_default(a: t.Any, b: t.Any) -> bool:
    a, b = _plain(a), _plain(b)
    if callable(a) or callable(b):
        return getattr(a, "__name__", a) == getattr(b, "__name__", b)
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


def _class_items(where: str, saq_cls: type, podq_cls: t.Any) -> list[tuple[str, bool]]:
    items: list[tuple[str, bool]] = []
    is_class = isinstance(podq_cls, type)
    if _is_typeddict(saq_cls):
        for key in saq_cls.__annotations__:
            items.append((f"{where}.{key}", is_class and _has_member(podq_cls, key)))
        return items
    if issubclass(saq_cls, enum.Enum):
        for member in saq_cls.__members__:
            items.append((f"{where}.{member}", is_class and _has_member(podq_cls, member)))
        return items
    items += _parameter_items(where, saq_cls, podq_cls if is_class else None)
    for member in class_members(saq_cls):
        covered = is_class and _has_member(podq_cls, member) and (
            # a method where SAQ has one; a property or attribute where SAQ has either
            _is_method(saq_cls, member) == _is_method(podq_cls, member))
        items.append((f"{where}.{member}", covered))
        saq_fn = _callable_of(saq_cls, member)
        if saq_fn is not None and inspect.isfunction(saq_fn):
            podq_fn = _callable_of(podq_cls, member) if covered else None
            items += _parameter_items(f"{where}.{member}", saq_fn, podq_fn)
    return items


def api_items() -> list[tuple[str, bool]]:
    """Every item of SAQ's public API with whether podq has it, in SAQ's order."""
    items: list[tuple[str, bool]] = []
    for module_name in SAQ_MODULES:
        saq_module = importlib.import_module(module_name)
        try:
            podq_module = importlib.import_module("podq" + module_name[len("saq"):])
        except ImportError:
            podq_module = None
        for name in _module_names(saq_module):
            where = f"{module_name}.{name}"
            saq_obj = getattr(saq_module, name)
            podq_obj = getattr(podq_module, name, None) if podq_module else None
            present = podq_module is not None and hasattr(podq_module, name)
            items.append((where, present))
            if getattr(saq_obj, "__module__", None) != module_name:
                continue  # re-exported: its members are checked where it is defined
            if isinstance(saq_obj, type):
                items += _class_items(where, saq_obj, podq_obj)
            elif inspect.isfunction(saq_obj):
                items += _parameter_items(where, saq_obj, podq_obj if present else None)
    return items


_ROW = re.compile(r"^\|\s*`(saq[^`]*)`\s*\|(.*)\|\s*$")


def documented_deviations(doc: Path = DOC) -> dict[str, str]:
    """Rows `| `saq.item` | podq | reason |` of the doc's tables: item -> reason."""
    found: dict[str, str] = {}
    for line in doc.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            cells = [c.strip() for c in match.group(2).split("|")]
            found[match.group(1)] = cells[-1] if cells else ""
    return found


def covers(deviation: str, item: str) -> bool:
    """A row covers its item and everything under it: a name its members and
    parameters, a parameter its default."""
    under = (deviation + ".", deviation + "(")
    if deviation.endswith(")"):
        under = (deviation[:-1] + "=",)
    return item == deviation or item.startswith(under)


def report() -> dict[str, t.Any]:
    items = api_items()
    deviations = documented_deviations() if DOC.exists() else {}
    missing = [item for item, covered in items if not covered]
    return {
        "items": len(items),
        "covered": len(items) - len(missing),
        "missing": missing,
        "undocumented": [m for m in missing if not any(covers(d, m) for d in deviations)],
        "stale rows": [d for d in deviations if not any(covers(d, m) for m in missing)],
    }


if __name__ == "__main__":
    import saq

    result = report()
    kinds: dict[str, list[int]] = {}
    for item, covered in api_items():
        kind = ("default" if "=" in item else "parameter" if "(" in item else "name")
        kinds.setdefault(kind, [0, 0])
        kinds[kind][0] += 1
        kinds[kind][1] += covered
    print(f"saq {saq.__version__}: {result['items']} items, {result['covered']} in podq")
    for kind, (total, covered) in kinds.items():
        print(f"  {kind}s: {covered}/{total}")
    if "-v" in sys.argv:
        print("missing:", *result["missing"], sep="\n  ")
    print("undocumented:", *result["undocumented"], sep="\n  ")
    print("stale rows:", *result["stale rows"], sep="\n  ")
