"""Real servers for tests, benchmarks and the local run: no mocks.

`RedisServer` starts Debian's `redis-server` on a free loopback port in a
temporary folder and stops exactly that process.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, deadline_s: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {deadline_s}s") from None
            time.sleep(0.02)


class RedisServer:
    """A private redis-server process on 127.0.0.1 and a free port.

    Use as a context manager, or call start()/stop(). `restart(empty=True)` simulates
    Redis coming back without its data.
    """

    def __init__(self, binary: str | None = None, port: int | None = None) -> None:
        self.binary = binary or os.environ.get("PODQ_REDIS_SERVER") or shutil.which("redis-server")
        if not self.binary:
            raise RuntimeError(
                "redis-server not found: install Debian's package (apt-get install redis-server)"
                " or set PODQ_REDIS_SERVER to its path"
            )
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="podq-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        for _attempt in range(5):
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.dir),
                    "--save", "",
                    "--appendonly", "no",
                    "--protected-mode", "no",
                    "--loglevel", "warning",
                    "--logfile", str(self.dir / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_for_port(self.port, deadline_s=10)
                return self
            except TimeoutError:
                self.process.kill()
                self.process.wait()
                self.port = free_port()  # the port was taken between choice and bind
        raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port; with --save "" it comes back empty."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
