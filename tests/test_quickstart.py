"""The README Quickstart, as written, from a fresh clone: `make run` creates the virtualenv,
installs the package and serves; /metrics answers on :9464 and the README's example event
shows up there as the README says it will.

Slow by nature (a new virtualenv and a full install every time: reusing one would not show
that a fresh clone works).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import ROOT, wait_http

README = ROOT / "README.md"
INSTALL_AND_START = 1200  # seconds: venv + pip install of every dependency, on a slow day


def quickstart_blocks() -> list[list[str]]:
    """The shell blocks of the README's Quickstart section, as lists of lines."""
    text = README.read_text("utf-8")
    m = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no '## Quickstart' section"
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)```", m.group(1), re.S)
    return [b.strip("\n").splitlines() for b in blocks]


def command_of(line: str) -> str:
    """A README line without its trailing comment."""
    return re.sub(r"\s+#.*$", "", line).strip()


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


@pytest.mark.timeout(INSTALL_AND_START + 300)
def test_readme_quickstart_from_a_fresh_clone(tmp_path: Path):
    blocks = quickstart_blocks()
    setup = [command_of(line) for line in blocks[0] if command_of(line)]
    assert setup == ["make run", "make test"], setup
    busy = [p for p in (4318, 9464) if not port_is_free(p)]
    assert not busy, (f"ports {busy} are in use: the Quickstart serves on the default ports "
                      f"4318 and 9464; stop whatever holds them and run this test again")

    clone = tmp_path / "kpi-exporter"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    assert not (clone / ".venv").exists()

    # A fresh shell: nothing of the test run's own environment leaks into the install.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
           and not k.startswith(("PYTEST_", "KPI_EXPORTER_"))}
    log_path = tmp_path / "make-run.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            try:
                wait_http("http://127.0.0.1:9464/-/ready", timeout=INSTALL_AND_START, proc=proc)
            except (TimeoutError, RuntimeError) as exc:
                pytest.fail(f"`make run` did not serve: {exc}\n"
                            f"{log_path.read_text(errors='replace')[-5000:]}")
            ready_after = time.monotonic() - started
            print(f"make run in a fresh clone: serving after {ready_after:.0f}s")
            assert (clone / ".venv" / "bin" / "kpi-exporter").exists()

            metrics = requests.get("http://127.0.0.1:9464/metrics", timeout=10)
            assert metrics.status_code == 200
            assert "kpi_exporter_build_info" in metrics.text

            # "Then send an event and see it": the README's commands, and its promised output.
            see = blocks[1]
            commands = [line for line in see if line.strip() and not line.startswith("#")]
            promised = [line.lstrip("# ").strip() for line in see if line.startswith("# ")]
            assert commands and promised, see
            out = subprocess.run(["bash", "-c", "set -e\n" + "\n".join(commands)], cwd=clone,
                                 env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            for line in promised:
                assert line in out.stdout.splitlines(), (line, out.stdout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # make and the exporter it started
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
