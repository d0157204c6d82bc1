"""OCI image archives without a container engine: layers are tarballs of folders.

The node's containerd imports them with `ctr images import`, so an image needs no
registry and no Docker. Used by scripts/control-plane (the pause image) and
scripts/images (the worker and operator images). Standard library only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
EPOCH = 0  # every file's mtime: the same tree gives the same layer digest


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = EPOCH
    info.uname = info.gname = ""
    return info


def layer_from_dir(root: Path, out: Path, skip: Iterable[str] = ()) -> None:
    """Write root's content (paths relative to it, owners and modes kept) as a layer tar."""
    skipped = {s.strip("/") for s in skip}
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            dirnames[:] = [d for d in dirnames
                           if os.path.normpath(os.path.join(rel_dir, d)) not in skipped]
            for name in [*dirnames, *sorted(filenames)]:
                path = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if rel in skipped:
                    continue
                info = tar.gettarinfo(path, arcname=rel)
                if info is None:  # a socket or similar: not image content
                    continue
                _normalise(info)
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}", path.stat().st_size


def write_archive(ref: str, layers: list[Path], config: dict, out: Path) -> str:
    """An OCI image layout archive of layers (uncompressed tars) and config; returns its digest.

    config holds the image's runtime settings (User, Env, Entrypoint, Cmd, WorkingDir,
    ExposedPorts); ref is the name `ctr images import` gives the image.
    """
    blobs: list[tuple[str, bytes | Path]] = []
    layer_descs = []
    for layer in layers:
        digest, size = _digest(layer)
        layer_descs.append({"mediaType": LAYER, "digest": digest, "size": size})
        blobs.append((digest, layer))
    image_config = {
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layer_descs]},
        "history": [{"created_by": f"podq layer {i}"} for i in range(len(layers))],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    blobs.append((config_digest, config_bytes))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": layer_descs,
    }, sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    blobs.append((manifest_digest, manifest))
    index = json.dumps({
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST, "digest": manifest_digest, "size": len(manifest),
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]},
        }],
    }, sort_keys=True).encode()

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".partial")
    os.close(fd)
    with tarfile.open(tmp_name, "w") as tar:
        def add_bytes(name: str, data: bytes) -> None:
            info = _normalise(tarfile.TarInfo(name))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add_bytes("index.json", index)
        seen = set()
        for digest, blob in blobs:
            if digest in seen:
                continue
            seen.add(digest)
            name = "blobs/sha256/" + digest.split(":", 1)[1]
            if isinstance(blob, bytes):
                add_bytes(name, blob)
            else:
                tar.add(str(blob), arcname=name, filter=_normalise)
    os.replace(tmp_name, out)
    return manifest_digest


def read_config(archive: Path) -> dict:
    """The runtime config (User, Env, Entrypoint, ...) of the one image in an archive."""
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> dict:
            member = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            assert member is not None
            return json.load(member)

        index_file = tar.extractfile("index.json")
        assert index_file is not None
        manifest = blob(json.load(index_file)["manifests"][0]["digest"])
        return blob(manifest["config"]["digest"])["config"]
