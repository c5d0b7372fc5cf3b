"""Security: nothing is unpickled, no network connection is opened, nothing is written outside the
output and cache directories the suite was given."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import NetworkBlocked

import robustbench_wbc

PACKAGE = Path(robustbench_wbc.__file__).parent


def test_nothing_is_unpickled():
    """Checkpoints are safetensors; torch.load appears only with weights_only=True; no pickle at all."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\((?P<args>[^)]*)\)", text):
            if "weights_only=True" not in m.group("args"):
                offenders.append(f"{path.name}: {m.group(0)}")
        if re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.M):
            offenders.append(f"{path.name}: imports a pickler")
        if re.search(r"pd\.read_pickle|np\.load\([^)]*allow_pickle=True", text):
            offenders.append(f"{path.name}: unpickles data")
    assert offenders == []


def test_the_cache_holds_safetensors_and_cards_only(tiny_cards, wbc_home):
    files = [p for p in (wbc_home / "checkpoints").rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} <= {".safetensors", ".yaml", ".json", ".lock"}


def test_the_network_guard_refuses_outside_connections():
    with pytest.raises(NetworkBlocked, match="192.0.2.1"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    with pytest.raises(NetworkBlocked, match="example.org"):
        socket.getaddrinfo("example.org", 443)
    # loopback stays open (a Dask LocalCluster talks over it)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


GUARD = textwrap.dedent('''
    import os, socket
    _log = os.environ["WBC_TEST_NET_LOG"]
    _connect = socket.socket.connect
    def _refuse(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family == socket.AF_UNIX or str(host) in ("127.0.0.1", "::1", "localhost"):
            return _connect(self, address)
        with open(_log, "a") as f:
            f.write(f"connect {address!r}\\n")
        raise OSError(f"network blocked by the test: {address!r}")
    socket.socket.connect = _refuse
''')


def test_a_whole_session_opens_no_connection_and_writes_only_under_out_and_cache(tmp_path, wbc_home, tiny_cards):
    """run, leaderboard, report and figures in a fresh process whose HOME, TMPDIR and working
    directory are empty directories: afterwards they are still empty, and no connection was tried."""
    guard, home, tmp, cwd, out = (tmp_path / d for d in ("guard", "home", "tmp", "cwd", "out"))
    for d in (guard, home, tmp, cwd):
        d.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "net.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), TMPDIR=str(tmp), WBC_ROBUST_HOME=str(wbc_home), WBC_TEST_NET_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(guard), *sys.path]), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    code = "import sys; from robustbench_wbc.cli import app; sys.exit(app())"
    commands = [
        ["run", "--models", "tiny_cls,tiny_multitask", "--splits", "synth:test,synth:ood-lab-b", "--attacks", "fgsm",
         "--eps", "8/255", "--n-images", "16", "--out", str(out)],
        ["leaderboard", "--out", str(out), "--write", str(out / "LEADERBOARD.md")],
        ["report", "--results", str(out), "--out", str(out / "report.html")],
        ["show", "figures", "--out", str(out), "--to", str(out / "figures")],
    ]
    for args in commands:
        p = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-2000:])
    assert not log.exists(), log.read_text()
    for d in (home, tmp, cwd):
        assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == [], d.name
    assert (out / "report.html").exists() and list((out / "figures").glob("*.png"))
