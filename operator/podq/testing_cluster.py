"""A real Redis Cluster on loopback for tests and benchmarks: by default three primaries
and three replicas (six redis-server processes in a folder), joined with
`redis-cli --cluster create`; `stop()` ends exactly those processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from podq.testing import ephemeral_port_floor, free_port, wait_for_port
from podq.testing_webhook import make_tls


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, both below the
    kernel's ephemeral range (free_port)."""
    for _ in range(100):
        port = free_port(below=ephemeral_port_floor() - 10000)
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster-mode redis-server")


class LoopbackCluster:
    def __init__(
        self, root: Path, nodes: int = 6, replicas: int = 1, password: str | None = None,
        tls: bool = False,
    ) -> None:
        self.root = root
        self.password = password
        self.nodes = nodes
        self.replicas = replicas
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        # TLS only (clients, replication, cluster bus), certificates of a private CA
        self.ca: Path | None = make_tls(root / "tls") / "ca.crt" if tls else None

    @property
    def url(self) -> str:
        """One name for the whole cluster (two seeds: any node can answer)."""
        ports = ",".join(f"127.0.0.1:{p}" for p in sorted(self.procs)[:2])
        if self.ca is None:
            return f"redis+cluster://{ports}/0"
        return f"rediss+cluster://{ports}/0?ssl_ca_certs={self.ca}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if not binary or not cli:
            raise RuntimeError("redis-server and redis-cli are needed for a cluster")
        for _ in range(self.nodes):
            port = cluster_port()
            while port in self.procs:
                port = cluster_port()
            home = self.root / str(port)
            home.mkdir()
            self.procs[port] = subprocess.Popen(
                [binary, *self._port_args(port), "--bind", "127.0.0.1", "--cluster-enabled",
                 "yes", "--cluster-config-file", str(home / "nodes.conf"), "--dir",
                 str(home), "--save", "", "--appendonly", "no",
                 "--cluster-node-timeout", "1500", *self._auth_args()],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        for port in self.procs:
            wait_for_port(port)
        subprocess.run(
            [cli, *(["-a", self.password, "--no-auth-warning"] if self.password else []),
             *(["--tls", "--cacert", str(self.ca)] if self.ca else []),
             "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.procs),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        self.wait_healthy(replicated=True)

    def _port_args(self, port: int) -> list[str]:
        if self.ca is None:
            return ["--port", str(port)]
        tls = self.ca.parent
        return ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes",
                "--tls-replication", "yes", "--tls-cert-file", str(tls / "tls.crt"),
                "--tls-key-file", str(tls / "tls.key"), "--tls-ca-cert-file", str(self.ca),
                "--tls-auth-clients", "no"]

    def _auth_args(self) -> list[str]:
        if not self.password:
            return []
        return ["--requirepass", self.password, "--masterauth", self.password]

    def client(self, port: int) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.ca)} if self.ca else {}
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5,
                           password=self.password, **tls)

    def wait_healthy(self, deadline_s: float = 60.0, replicated: bool = False) -> None:
        """Every live node says cluster_state:ok and every slot has a live primary; with
        replicated, every primary has its replicas online too (their first sync done,
        so WAIT and a failover find them: it takes seconds on a loaded machine)."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                ok = all(
                    b"cluster_state:ok" in self.client(p).execute_command("CLUSTER", "INFO")
                    for p in self.procs
                ) and self._primaries_alive() and (not replicated or self._replicas_online())
            except redis.RedisError:
                ok = False
            if ok:
                return
            assert time.monotonic() < deadline, "the cluster did not become healthy"
            time.sleep(0.1)

    def _primaries_alive(self) -> bool:
        slots = self.slots()
        return sum(end - start + 1 for start, end, _ in slots) == 16384 and all(
            port in self.procs for _, _, port in slots
        )

    def _replicas_online(self) -> bool:
        for port in {port for _, _, port in self.slots()}:
            info = self.client(port).info("replication")
            online = [v for k, v in info.items()
                      if k.startswith("slave") and isinstance(v, dict)
                      and v.get("state") == "online"]
            if len(online) < self.replicas:
                return False
        return True

    def slots(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, primary port) per range, as a live node sees it."""
        port = next(iter(self.procs))
        return [(int(r[0]), int(r[1]), int(r[2][1]))
                for r in self.client(port).execute_command("CLUSTER", "SLOTS")]

    def owner(self, key: str) -> int:
        slot = self.client(next(iter(self.procs))).cluster("KEYSLOT", key)
        return next(p for start, end, p in self.slots() if start <= int(slot) <= end)

    def spread(self, count: int, prefix: str = "q") -> dict[str, int]:
        """Queue names whose slots belong to `count` different primaries: name -> port."""
        found: dict[str, int] = {}
        for i in range(500):
            name = f"{prefix}{i}"
            owner = self.owner(f"podq:{{{name}}}:queued")
            if owner not in found.values():
                found[name] = owner
            if len(found) == count:
                return found
        raise AssertionError(f"no {count} queue names spread over the shards")

    def wait_owner(self, key: str, port: int, deadline_s: float = 30.0) -> None:
        """Block until the primary at port owns key's slot (after a failover)."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                if self.owner(key) == port:
                    return
            except redis.RedisError:  # a node mid-election may refuse; ask again
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{port} did not take over {key}")
            time.sleep(0.05)

    def migrate_slot(self, key: str, target: int, batch: int = 10, pace_s: float = 0.0) -> int:
        """Move key's slot to the primary at target as `redis-cli --cluster reshard` does:
        IMPORTING on the target, MIGRATING on the owner, MIGRATE of the slot's keys
        `batch` at a time (`pace_s` apart, to stretch the migration), then SETSLOT NODE
        on every primary. Returns how many keys moved."""
        source = self.owner(key)
        slot = int(self.client(source).cluster("KEYSLOT", key))
        src, dst = self.client(source), self.client(target)
        ids = {port: self.client(port).execute_command("CLUSTER", "MYID") for port in self.procs}
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        auth = ["AUTH", self.password] if self.password else []
        moved = 0
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, *auth,
                                "KEYS", *keys)
            moved += len(keys)
            if pace_s:
                time.sleep(pace_s)
        primaries = {port for _, _, port in self.slots()} - {source, target}
        for port in [target, source, *primaries]:  # SETSLOT is for primaries only
            self.client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        return moved

    def replica_of(self, primary: int) -> int:
        node_id = self.client(primary).execute_command("CLUSTER", "MYID")
        if isinstance(node_id, bytes):
            node_id = node_id.decode()
        for port in self.procs:
            if port == primary:
                continue
            role = self.client(port).execute_command("ROLE")
            if role[0] == b"slave" and int(role[2]) == primary:
                return port
        raise AssertionError(f"no replica of {primary} ({node_id})")

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(10)

    def __enter__(self) -> LoopbackCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(10)
        self.procs.clear()
