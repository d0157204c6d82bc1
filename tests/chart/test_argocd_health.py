"""The Argo CD health checks (deploy/argocd/podq.dev/<Kind>/health.lua) run by Lua 5.1,
as Argo CD runs them (gopher-lua is a Lua 5.1), on the sample resources their
health_test.yaml lists, in Argo CD's own test format; and the copies of the scripts in
the GitOps docs and examples are the same text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import ROOT
from lupa.lua51 import LuaRuntime

HEALTH = ROOT / "deploy" / "argocd" / "podq.dev"
KINDS = ("Job", "CronJob")
# What Argo CD's Lua VM opens for health scripts: base, table, string, math; no os or io.
SANDBOX_GLOBALS = ("ipairs", "pairs", "next", "type", "tostring", "tonumber", "select",
                   "unpack", "error", "pcall", "assert", "string", "table", "math")


class NoTimestampLoader(yaml.SafeLoader):
    """A YAML loader that keeps RFC 3339 times as strings, as JSON-decoded objects have them."""


NoTimestampLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}


def to_lua(lua: LuaRuntime, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def run_health(kind: str, resource: dict[str, Any]) -> dict[str, Any]:
    lua = LuaRuntime(register_eval=False, unpack_returned_tuples=True)
    script = (HEALTH / kind / "health.lua").read_text()
    env = lua.table_from({name: lua.globals()[name] for name in SANDBOX_GLOBALS})
    env["obj"] = to_lua(lua, resource)
    chunk = lua.eval("function(src, env) local f, err = loadstring(src, 'health.lua');"
                     " if not f then error(err) end; setfenv(f, env); return f() end")
    hs = chunk(script, env)
    return {"status": hs["status"], "message": hs["message"]}


def cases(kind: str) -> list[Any]:
    spec = yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())
    return [pytest.param(kind, t["inputPath"], t["healthStatus"],
                         id=f"{kind}-{Path(t['inputPath']).stem}") for t in spec["tests"]]


@pytest.mark.parametrize(("kind", "input_path", "expected"), cases("Job") + cases("CronJob"))
def test_health_check(kind: str, input_path: str, expected: dict[str, str]) -> None:
    resource = yaml.load((HEALTH / kind / input_path).read_text(), Loader=NoTimestampLoader)
    assert run_health(kind, resource) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_every_testdata_file_is_a_case(kind: str) -> None:
    listed = {t["inputPath"] for t in yaml.safe_load(
        (HEALTH / kind / "health_test.yaml").read_text())["tests"]}
    present = {f"testdata/{p.name}" for p in (HEALTH / kind / "testdata").glob("*.yaml")}
    assert listed == present


def test_every_status_value_of_the_crd_has_a_case() -> None:
    """Each value of status.status in crds/jobs.podq.dev.yaml maps to an Argo CD health."""
    crd = yaml.safe_load((ROOT / "crds" / "jobs.podq.dev.yaml").read_text())
    status_enum = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"]["properties"]["status"]["enum"]
    expected = {"new": "Progressing", "queued": "Progressing", "active": "Progressing",
                "aborting": "Progressing", "complete": "Healthy", "failed": "Degraded",
                "aborted": "Degraded"}
    assert set(status_enum) == set(expected)
    for value in status_enum:
        resource = {"apiVersion": "podq.dev/v1alpha1", "kind": "Job",
                    "metadata": {"name": "x", "generation": 1},
                    "spec": {"function": "f"}, "status": {"status": value}}
        assert run_health("Job", resource)["status"] == expected[value], value


def test_a_script_error_is_not_hidden() -> None:
    """Sanity of the harness: a status of the wrong shape raises instead of passing."""
    with pytest.raises(Exception, match="attempt to compare"):
        run_health("Job", {"metadata": {"generation": 1},
                           "status": {"status": "complete", "attempts": {"n": 3}}})


def argocd_cm_scripts(text: str) -> dict[str, str]:
    """health.lua texts of `resource.customizations.health.podq.dev_<Kind>` keys in the
    argocd-cm ConfigMap(s) of a YAML stream."""
    found: dict[str, str] = {}
    for doc in yaml.safe_load_all(text):
        if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "argocd-cm":
            for key, value in doc.get("data", {}).items():
                prefix = "resource.customizations.health.podq.dev_"
                if key.startswith(prefix):
                    found[key.removeprefix(prefix)] = value
    return found


def test_argocd_cm_example_carries_the_same_scripts() -> None:
    text = (ROOT / "examples" / "gitops" / "argocd" / "argocd-cm-podq-health.yaml").read_text()
    scripts = argocd_cm_scripts(text)
    assert sorted(scripts) == sorted(KINDS)
    for kind, script in scripts.items():
        assert script == (HEALTH / kind / "health.lua").read_text(), (
            f"examples/gitops/argocd: the {kind} script differs from deploy/argocd")


def test_gitops_doc_carries_the_same_scripts() -> None:
    doc = (ROOT / "docs" / "gitops.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc.split("```yaml\n")[1:]]
    scripts: dict[str, str] = {}
    for block in blocks:
        scripts.update(argocd_cm_scripts(block))
    assert sorted(scripts) == sorted(KINDS)
    for kind, script in scripts.items():
        assert script == (HEALTH / kind / "health.lua").read_text(), (
            f"docs/gitops.md: the {kind} script differs from deploy/argocd")
