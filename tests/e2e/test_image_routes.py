"""The two routes to podq's images agree: worker_image/Dockerfile* (users with Docker and
a registry) and `scripts/images` (Debian packages, no Docker; what the node runs).

Read from the Dockerfile's text here (not through scripts/lib/podq_images.py, which
builds from it) and from the built archive: the same user and group 10001 (numeric, with
the home and shell `useradd` gives), entrypoint, command, environment and working
directory, podq in a virtualenv at /opt/podq, the files the Dockerfile copies, and nothing
written outside /tmp at run time (the chart's read-only root), which a pod on the node
checks for real.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tarfile
import tomllib
from pathlib import Path

import pytest
from chart_release import ROOT, Release

DOCKERFILES = {"worker": ROOT / "worker_image" / "Dockerfile",
               "operator": ROOT / "worker_image" / "Dockerfile.operator"}


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) of the Dockerfile's last stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append((word.upper(), rest.strip()))
    return stages[-1]


def instruction(stage: list[tuple[str, str]], word: str) -> list[str]:
    return [rest for w, rest in stage if w == word]


def distribution(name: str) -> str:
    """A distribution's name as pip normalises it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_requirements(dockerfile: Path) -> set[str]:
    """The distributions the extras named by the Dockerfile's `pip install .[...]` add
    (pyproject.toml's optional dependencies)."""
    (install,) = [line for line in dockerfile.read_text().splitlines()
                  if line.startswith("RUN") and "pip install" in line]
    target = shlex.split(install.split("pip install", 1)[1])[-1]
    extras = [e for e in target.removeprefix(".").strip("[]").split(",") if e]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    return {distribution(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0])
            for extra in extras for req in declared[extra]}


def read_image(archive: Path, wanted: set[str]) -> tuple[dict, dict[str, tarfile.TarInfo],
                                                        dict[str, bytes]]:
    """(config, every path's last entry, contents of the wanted files) of the archive's
    image, its layers applied in order (uncompressed tars, whiteouts honoured)."""
    entries: dict[str, tarfile.TarInfo] = {}
    contents: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        def blob(digest: str):
            member = outer.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            assert member is not None
            return member

        index_file = outer.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
        manifest = json.load(blob(index["manifests"][0]["digest"]))
        config = json.load(blob(manifest["config"]["digest"]))["config"]
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=blob(layer["digest"]), mode="r|") as tar:
                for info in tar:
                    path = "/" + info.name.removeprefix("./").strip("/")
                    name = Path(path).name
                    if name.startswith(".wh."):
                        gone = str(Path(path).parent / name.removeprefix(".wh."))
                        entries.pop(gone, None)
                        contents.pop(gone, None)
                        continue
                    entries[path] = info
                    if path in wanted and info.isreg():
                        extracted = tar.extractfile(info)
                        assert extracted is not None
                        contents[path] = extracted.read()
    return config, entries, contents


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_built_image_has_the_layout_its_dockerfile_describes(
    name: str, images: dict[str, dict]
) -> None:
    stage = final_stage(DOCKERFILES[name])
    (user,) = instruction(stage, "USER")
    assert user == "10001:10001"
    (workdir,) = instruction(stage, "WORKDIR")
    (useradd,) = [r for r in instruction(stage, "RUN") if "useradd" in r]
    home = re.search(r"--home-dir\s+(\S+)", useradd)[1]  # type: ignore[index]
    shell = re.search(r"--shell\s+(\S+)", useradd)[1]  # type: ignore[index]
    copies = [shlex.split(r) for r in instruction(stage, "COPY") if not r.startswith("--")]
    wanted = {"/etc/passwd", "/etc/group",
              *(str(Path(workdir, dest) / Path(src).name) for src, dest in copies)}

    config, entries, contents = read_image(Path(images[name]["archive"]), wanted)

    # what the container runtime takes from the config
    assert config["User"] == user
    assert config["Entrypoint"] == json.loads(instruction(stage, "ENTRYPOINT")[0])
    assert config["Cmd"] == json.loads(instruction(stage, "CMD")[0])
    assert config["WorkingDir"] == workdir
    env = dict(item.split("=", 1) for item in config["Env"])
    for declared in instruction(stage, "ENV"):
        for pair in shlex.split(declared):
            key, _, value = pair.partition("=")
            if key == "PATH":  # `/opt/podq/bin:$PATH`: ours first, then the usual ones
                assert env["PATH"].split(":")[0] == value.split(":")[0] == "/opt/podq/bin"
            else:
                assert env[key] == value, key
    for port in instruction(stage, "EXPOSE"):
        assert f"{port}/tcp" in config.get("ExposedPorts", {})

    # the podq user and group, as `groupadd`/`useradd --system` make them
    passwd = contents["/etc/passwd"].decode().splitlines()
    assert f"podq:x:10001:10001::{home}:{shell}" in passwd, passwd[-3:]
    assert "podq:x:10001:" in contents["/etc/group"].decode().splitlines()
    # the entrypoint runs podq from its virtualenv; the copied files are in place
    entrypoint = f"/opt/podq/bin/{config['Entrypoint'][0]}"
    assert entrypoint in entries and entries[entrypoint].mode & 0o111, entrypoint
    assert "/opt/podq/pyvenv.cfg" in entries
    # podq and what the extras its `pip install` names add (the worker's: hiredis)
    metadata = re.compile(
        r"/opt/podq/lib/python3\.\d+/site-packages/([^/]+)-[^-/]+\.dist-info/METADATA")
    installed = {distribution(m[1]) for p in entries if (m := metadata.fullmatch(p))}
    missing = ({"podq"} | extra_requirements(DOCKERFILES[name])) - installed
    assert not missing, (missing, sorted(installed))
    for src, dest in copies:
        copied = str(Path(workdir, dest) / Path(src).name)
        assert contents[copied] == (ROOT / src).read_bytes(), copied
    # no build tools, no source: pip's cache and the checkout stay out
    assert not [p for p in entries if p.startswith(("/tmp/src", "/root/.cache"))]
    # nothing but /tmp needs to be writable: owned by root, not by the podq user
    owned = [p for p, info in entries.items() if info.uid == 10001]
    assert not owned, owned[:5]


def assert_restricted(found: dict) -> None:
    """What the chart's security contexts ask for, as the kernel applies it: uid and gid
    10001, seccomp filtering (mode 2, RuntimeDefault), no_new_privs (no privilege
    escalation), no capability at all (drop ALL), the root filesystem read-only and /tmp
    (its emptyDir) writable."""
    assert found["main"], found  # the podq process itself, beside the probe
    for status in [found["exec"], *found["main"]]:
        assert status["Uid"].split() == ["10001"] * 4, status
        assert status["Gid"].split() == ["10001"] * 4, status
        assert status["Seccomp"] == "2", status
        assert status["NoNewPrivs"] == "1", status
        for caps in ("CapEff", "CapPrm", "CapBnd"):
            assert int(status[caps], 16) == 0, status
    assert found["root"] == "Read-only file system", found
    assert found["tmp"] == "yes", found


def test_pods_run_the_image_as_10001_on_a_read_only_root(release: Release) -> None:
    """In a pod of the chart (the operator's, always there; the worker's in
    test_chart_on_node's drain test)."""
    pod = release.get("pods", "-l", "app.kubernetes.io/component=operator")["items"][0]
    assert_restricted(release.security_of(pod["metadata"]["name"]))


def test_archives_unused_for_a_day_are_pruned(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Each change to the checkout makes new archives (hundreds of MiB): those of an image
    not used for a day go when another of it is built or used; anything else stays."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts" / "lib"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    import podq_images

    folder = podq_images.cache_dir()
    folder.mkdir(parents=True)
    now = 1_000_000_000.0
    ages = {"worker-00000000000000a1.tar": 2 * 86400, "worker-00000000000000a2.tar": 3600,
            "worker-00000000000000a3.tar": 2 * 86400,  # the one in use: kept
            "operator-00000000000000b1.tar": 2 * 86400,  # another image's
            "worker.log": 2 * 86400, "worker-notes.tar": 2 * 86400}  # not archives
    for name, age in ages.items():
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (now - age, now - age))
    gone = podq_images.prune("worker", folder / "worker-00000000000000a3.tar", now=now)
    assert [p.name for p in gone] == ["worker-00000000000000a1.tar"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(set(ages) - {gone[0].name})
