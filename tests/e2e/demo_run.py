"""./scripts/demo in node mode, started in the background as soon as the e2e tests are
collected (conftest.py), when test_demo_node is selected: it brings up a control plane
and a node of its own and mostly waits on pods, so it runs beside the tests of the
session's node rather than after them (about 45 s less CI time); its test collects
what it printed and checks that it left nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from chart_release import ROOT, node_module
from host import netns_names


class BackgroundDemo:
    """`scripts/demo.py --exit-when-done` in a short run folder of its own
    ($PODQ_DEMO_DIR: the node's sockets live in it), its output read as it comes."""

    def __init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="podq-demo-"))
        self.netns = node_module().netns_name(self.run_dir / "control-plane")
        self.lines: list[str] = []
        # whether the demo node's network namespace existed once the node was up (its
        # "==> helm install" line, which follows); None until that line
        self.netns_when_up: bool | None = None
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "demo.py"), "--exit-when-done",
             "--timeout", "240"],
            cwd=ROOT, env={**os.environ, "PODQ_DEMO_DIR": str(self.run_dir),
                           "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("==> helm install") and self.netns_when_up is None:
                self.netns_when_up = self.netns in netns_names()
            self.lines.append(line)

    def wait(self, timeout: float) -> int:
        """The demo's exit code, once it has ended (stopped if it outlives timeout)."""
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.stop()
            self.reader.join(timeout=30)

    def stop(self) -> None:
        """Terminate the demo if it still runs: it stops what it started."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=120)

    def remove_run_dir(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
