"""The worker and operator images, built here without Docker or a registry.

The same images as worker_image/Dockerfile and Dockerfile.operator describe, made from
Debian packages instead of the python:slim base image:

- base layer: `debootstrap --variant=minbase` of Debian with python3 and python3-venv,
  trimmed (no docs, man pages, apt lists), cached under ~/.cache/podq/images;
- podq layer: a virtualenv at /opt/podq with podq installed from this checkout
  (the extras the Dockerfile's `pip install` names), the podq user and group 10001, and
  the files the Dockerfile COPYs into /app; made in an overlay mount over the base, so
  the layer is exactly what the install changed;
- config (user, environment, working directory, entrypoint, command, ports): read from
  the Dockerfile's final stage, so the two routes cannot drift apart.

The result is an OCI archive (`podq_oci.write_archive`) that `scripts/control-plane
load-image` imports into the node's containerd; pods use `imagePullPolicy: Never`.
Needs root (debootstrap, chroot, overlay mounts). Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import podq_oci as oci

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# what the base keeps out: documentation and package caches nobody reads in a pod
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
        "var/lib/apt/lists", "var/cache/apt", "var/cache/debconf", "var/log")
SOURCE = ("pyproject.toml", "README.md", "operator")  # what the Dockerfiles COPY to build


@dataclass(frozen=True)
class ImageSpec:
    name: str
    dockerfile: Path

    @property
    def repository(self) -> str:
        return f"podq.local/{self.name}"


IMAGES = {
    "worker": ImageSpec("worker", REPO / "worker_image" / "Dockerfile"),
    "operator": ImageSpec("operator", REPO / "worker_image" / "Dockerfile.operator"),
}


class BuildError(Exception):
    pass


# Archives of an image not used for this long are removed when another is built or used:
# each change to the checkout makes a new one (about 160 MiB for the worker, 230 for the
# operator), and a day of work left gigabytes of them behind.
PRUNE_AFTER_S = 24 * 3600


def prune(name: str, keep: Path, now: float | None = None) -> list[Path]:
    """Remove `name`'s archives other than keep that were not used for PRUNE_AFTER_S (their
    mtime: set when built or used); returns what went."""
    now = time.time() if now is None else now
    gone = []
    for archive in cache_dir().glob(f"{name}-*.tar"):
        if archive == keep or not re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}\.tar",
                                                archive.name):
            continue
        with contextlib.suppress(OSError):
            if now - archive.stat().st_mtime > PRUNE_AFTER_S:
                archive.unlink()
                gone.append(archive)
    return gone


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "podq" / "images"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the Dockerfile


@dataclass
class Recipe:
    """What the final stage of a Dockerfile says about the image, and its pip install."""

    config: dict
    pip_target: str  # e.g. "." or ".[operator]"
    home: str  # the podq user's home directory
    copies: list[tuple[str, str]]  # (source in the repo, destination folder) into the image


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def parse_dockerfile(path: Path) -> Recipe:
    """The image config of the final stage (ENV, USER, WORKDIR, EXPOSE, ENTRYPOINT, CMD)."""
    stages: list[list[tuple[str, str]]] = []
    for line in _logical_lines(path.read_text()):
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest.strip()))
    if not stages:
        raise BuildError(f"{path}: no FROM")
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    config: dict = {}
    copies: list[tuple[str, str]] = []
    home = "/"
    workdir = "/"
    for word, rest in stages[-1]:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], ""), value)
        elif word == "USER":
            config["User"] = rest
        elif word == "WORKDIR":
            workdir = rest
            config["WorkingDir"] = rest
        elif word in ("ENTRYPOINT", "CMD"):
            config[word.title() if word == "CMD" else "Entrypoint"] = json.loads(rest)
        elif word == "EXPOSE":
            config["ExposedPorts"] = {f"{p}/tcp" if "/" not in p else p: {}
                                      for p in rest.split()}
        elif word == "RUN" and (m := re.search(r"--home-dir\s+(\S+)", rest)):
            home = m[1]
        elif word == "COPY" and not rest.startswith("--from"):
            src, dest = rest.split()
            copies.append((src, dest if dest.startswith("/") else f"{workdir}/{dest}"))
    config["Env"] = [f"{k}={v}" for k, v in env.items()]
    installs = [rest for word, rest in (s for stage in stages for s in stage)
                if word == "RUN" and "pip install" in rest]
    if not installs:
        raise BuildError(f"{path}: no `pip install` in any stage")
    target = shlex.split(installs[-1].split("pip install", 1)[1])[-1]
    return Recipe(config=config, pip_target=target, home=home, copies=copies)


# ---------------------------------------------------------------- building


def run(cmd: list[str], log: Path, **kwargs) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n")
        out.flush()
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False,
                              **kwargs).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise BuildError(f"{shlex.join(cmd)} failed (exit {code}); end of {log}:\n{tail}")


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (debootstrap must reach the same one)."""
    for source in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob(
            "*"))]:
        with contextlib.suppress(OSError):
            text = source.read_text()
            for m in re.finditer(r"(?:^URIs:\s*|^deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.M):
                if "security" not in m[1]:
                    return m[1]
    return "http://deb.debian.org/debian"


def ensure_debootstrap() -> None:
    if shutil.which("debootstrap"):
        return
    say("images: installing debootstrap (Debian package)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"]):
        if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
            raise BuildError(f"{' '.join(cmd)} failed")


def base() -> tuple[Path, Path]:
    """(rootfs folder, layer tar) of the Debian base; built once, then cached."""
    key = hashlib.sha256(f"{SUITE} {BASE_PACKAGES} {TRIM}".encode()).hexdigest()[:12]
    home = cache_dir() / f"base-{SUITE}-{key}"
    rootfs, layer = home / "rootfs", home / "layer.tar"
    if layer.is_file():
        return rootfs, layer
    ensure_debootstrap()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    log = home / "build.log"
    started = time.monotonic()
    say(f"images: debootstrap {SUITE} with {', '.join(BASE_PACKAGES)} (first time only;"
        f" log: {log})")
    partial = home / "rootfs.partial"
    run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
         str(partial), apt_mirror()], log)
    for trimmed in TRIM:
        target = partial / trimmed
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    os.replace(partial, rootfs)
    oci.layer_from_dir(rootfs, home / "layer.partial", skip=("dev", "proc", "sys"))
    os.replace(home / "layer.partial", layer)
    say(f"images: base built in {time.monotonic() - started:.0f}s")
    return rootfs, layer


def source_digest(spec: ImageSpec, recipe: Recipe, base_layer: Path) -> str:
    """What the podq layer depends on: the base, the Dockerfile, the files it installs."""
    h = hashlib.sha256(base_layer.parent.name.encode())
    h.update(Path(__file__).read_bytes())  # how the layer is made
    h.update(spec.dockerfile.read_bytes())
    paths = [REPO / s for s in SOURCE] + [REPO / src for src, _ in recipe.copies]
    for top in paths:
        files = [top] if top.is_file() else sorted(
            p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            and ".egg-info" not in str(p))
        for f in files:
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def overlay(lower: Path, work: Path) -> Iterator[tuple[Path, Path]]:
    """An overlay mount over lower; yields (merged, upper): upper gets every change."""
    upper, scratch, merged = work / "upper", work / "work", work / "merged"
    for d in (upper, scratch, merged):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={scratch}", str(merged)],
                   check=True, capture_output=True)
    mounted = [merged]
    try:
        for fs, target in (("proc", "proc"), ("devtmpfs", "dev")):
            subprocess.run(["mount", "-t", fs, fs, str(merged / target)], check=True,
                           capture_output=True)
            mounted.append(merged / target)
        yield merged, upper
    finally:
        for point in reversed(mounted):
            subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def build(name: str) -> dict:
    """Build one image (cached by its inputs); returns {name, ref, archive, seconds}."""
    if os.geteuid() != 0:
        raise BuildError("building images needs root (debootstrap, chroot, overlay mounts)")
    spec = IMAGES[name]
    started = time.monotonic()
    recipe = parse_dockerfile(spec.dockerfile)
    rootfs, base_layer = base()
    tag = source_digest(spec, recipe, base_layer)[:16]
    ref = f"{spec.repository}:{tag}"
    archive = cache_dir() / f"{name}-{tag}.tar"
    if not archive.is_file():
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=f"{name}-build-") as tmp:
            work = Path(tmp)
            log = cache_dir() / f"{name}.log"
            log.write_text(f"# building {ref}\n")
            with overlay(rootfs, work) as (merged, upper):
                src = merged / "tmp" / "src"
                src.mkdir(parents=True)
                for item in SOURCE:
                    copy = shutil.copytree if (REPO / item).is_dir() else shutil.copy2
                    copy(REPO / item, src / item, **({"ignore": shutil.ignore_patterns(
                        "__pycache__", "*.egg-info")} if copy is shutil.copytree else {}))
                # pip in the chroot reaches the index as this machine's pip does: same
                # PIP_* and proxy settings, same CA bundle (a proxy may sign with its own)
                pip_cache = cache_dir() / "pip-cache"
                pip_cache.mkdir(exist_ok=True)
                (merged / "tmp" / "pip-cache").mkdir()
                shutil.copy2(host_ca_bundle(), merged / "tmp" / "ca.crt")
                subprocess.run(["mount", "--bind", str(pip_cache),
                                str(merged / "tmp" / "pip-cache")], check=True)
                try:
                    env = {**{k: v for k, v in os.environ.items()
                              if k.startswith("PIP_") or k.lower().endswith("_proxy")},
                           "PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8",
                           "PIP_CERT": "/tmp/ca.crt", "PIP_CACHE_DIR": "/tmp/pip-cache",
                           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
                    env.pop("PIP_FIND_LINKS", None)  # host paths
                    run(["chroot", str(merged), "python3", "-m", "venv", "/opt/podq"], log,
                        env=env)
                    run(["chroot", str(merged), "/opt/podq/bin/pip", "install", "-q",
                         recipe.pip_target.replace(".", "/tmp/src", 1)], log, env=env, cwd="/")
                    # Bytecode checked by source hash, not mtime: layers set every mtime to
                    # 0, so mtime-stamped .pyc files (pip's, Debian's for the standard
                    # library) no longer match their source and, with a read-only root
                    # and PYTHONDONTWRITEBYTECODE, every process start compiled all it
                    # imports again (20 s for a worker on a busy 2-core machine, not 1 s).
                    # The standard library's new .pyc files land in this layer.
                    stdlib = [f"/{p.relative_to(merged)}" for p in
                              sorted((merged / "usr" / "lib").glob("python3.*"))]
                    run(["chroot", str(merged), "python3", "-m", "compileall", "-q",
                         "--invalidation-mode", "checked-hash", *stdlib, "/opt/podq"], log,
                        env=env, cwd="/")
                finally:
                    subprocess.run(["umount", str(merged / "tmp" / "pip-cache")], check=False)
                shutil.rmtree(merged / "tmp" / "src")
                (merged / "tmp" / "pip-cache").rmdir()
                (merged / "tmp" / "ca.crt").unlink()
                add_user(merged, recipe.home)
                for src_path, dest in recipe.copies:
                    target = merged / dest.lstrip("/")
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / src_path, target / Path(src_path).name)
                workdir = recipe.config.get("WorkingDir")
                if workdir:
                    (merged / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
                for pycache in (merged / "root").glob(".cache"):
                    shutil.rmtree(pycache, ignore_errors=True)
                layer = work / "podq-layer.tar"
                oci.layer_from_dir(upper, layer, skip=("tmp", "root/.cache", "dev", "proc"))
            oci.write_archive(ref, [base_layer, layer], recipe.config, archive)
    os.utime(archive)  # used now: kept by prune() for another PRUNE_AFTER_S
    prune(name, archive)
    return {"name": name, "ref": ref, "repository": spec.repository, "tag": tag,
            "archive": str(archive), "seconds": round(time.monotonic() - started, 1)}


def host_ca_bundle() -> Path:
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"),
                      os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise BuildError("no CA bundle found for pip (set PIP_CERT)")


def add_user(root: Path, home: str) -> None:
    """The podq user and group 10001, as the Dockerfiles' groupadd/useradd make them."""
    with (root / "etc" / "group").open("a") as f:
        f.write("podq:x:10001:\n")
    with (root / "etc" / "passwd").open("a") as f:
        f.write(f"podq:x:10001:10001::{home}:/usr/sbin/nologin\n")
