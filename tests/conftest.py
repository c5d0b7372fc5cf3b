"""Shared fixtures: a private model cache, the tiny models trained once, and one small bench run.

Nothing here writes into the repository or the user's home: ``WBC_ROBUST_HOME`` points at a
session temporary directory before any model is loaded, and run outputs go to tmp dirs.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from robustbench_wbc import paths
from robustbench_wbc.attacks import ATTACKS
from robustbench_wbc.models import MODELS, ModelCard, load_model

# One intra-op thread: the tiny models gain nothing from two, and a suite sharing 2 cores with
# another process slows down many times over when both spin OpenMP threads.
torch.set_num_threads(1)

TINY_MODELS = MODELS.list(where=lambda e: e.tiny)
# The bench matrix the bench, report and CLI tests share: small, but every family and attack.
BENCH_MODELS = ("tiny_cls", "tiny_unet", "tiny_multitask")
BENCH_SPLITS = ("synth:test", "synth:ood-lab-b")
BENCH_ATTACKS = ("fgsm", "pgd")
BENCH_EPS = (2 / 255, 8 / 255)
BENCH_N = 20


class NetworkBlocked(OSError):
    """A test tried to reach the network: the suite must never (nothing is downloaded, ever)."""


LOOPBACK = {"127.0.0.1", "::1", "localhost", "", "0.0.0.0"}


@pytest.fixture(scope="session", autouse=True)
def no_network():
    """Fails any test that opens a connection, or resolves a name, beyond this machine's loopback
    (where a Dask LocalCluster talks)."""
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo
    local = LOOPBACK | {socket.gethostname()}

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family != getattr(socket, "AF_UNIX", None) and str(host) not in local \
                and not str(host).startswith("127."):
            raise NetworkBlocked(f"a test tried to connect to {address!r}: the suite opens no network connection")
        return connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and str(host) not in local and not str(host).startswith("127."):
            raise NetworkBlocked(f"a test tried to resolve {host!r}: the suite opens no network connection")
        return getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded_connect)
        mp.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
        yield


@pytest.fixture(scope="session", autouse=True)
def wbc_home(tmp_path_factory: pytest.TempPathFactory):
    """Points the model cache at a session tmp dir (restored afterwards)."""
    home = tmp_path_factory.mktemp("wbc_robust_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WBC_ROBUST_HOME", str(home))
        assert paths.home() == home.resolve()
        yield home


@pytest.fixture(scope="session")
def tiny_cards(wbc_home: Path) -> dict[str, ModelCard]:
    """Trains (once per session) every registered tiny model; gives their cards."""
    assert set(BENCH_MODELS) <= set(TINY_MODELS)
    cards = {}
    for mid in TINY_MODELS:
        model, card = load_model(mid)
        assert not model.training
        cards[mid] = card
    return cards


@pytest.fixture(scope="session")
def load_tiny(tiny_cards) -> Callable[[str], torch.nn.Module]:
    """Gives a fresh copy (its own module, eval mode) of a trained tiny model, from the cache."""

    def load(model_id: str) -> torch.nn.Module:
        assert model_id in tiny_cards
        model, card = load_model(model_id, train=False)
        assert card.weights_sha256 == tiny_cards[model_id].weights_sha256
        return model

    return load


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory, tiny_cards):
    """One bench run over the tiny models: ``(out dir, summary)``."""
    from robustbench_wbc.bench import run

    out = tmp_path_factory.mktemp("bench_out")
    summary = run(list(BENCH_MODELS), list(BENCH_SPLITS), list(BENCH_ATTACKS), out,
                  eps=list(BENCH_EPS), n_images=BENCH_N)
    return out, summary


@pytest.fixture(scope="session")
def bench_table(bench_run):
    from robustbench_wbc.bench import ResultStore

    out, _ = bench_run
    return ResultStore(out).table()


@pytest.fixture
def restore_attacks():
    """Removes any attack a test registers (plugin files included), and restores the plugin-loading state."""
    from robustbench_wbc import plugins as plugins_mod

    before = set(ATTACKS._entries)
    loaded = ATTACKS._plugins_loaded
    files = dict(plugins_mod._LOADED)
    yield
    for name in set(ATTACKS._entries) - before:
        ATTACKS.remove(name)
    ATTACKS._plugins_loaded = loaded
    plugins_mod._LOADED.clear()
    plugins_mod._LOADED.update(files)


@pytest.fixture
def restore_models():
    """Removes any model a test registers (plugins included), so the registry matches the committed cards again."""
    from robustbench_wbc import plugins as plugins_mod

    before = set(MODELS._entries)
    loaded = dict(plugins_mod._LOADED)
    yield
    for name in set(MODELS._entries) - before:
        MODELS.remove(name)
    plugins_mod._LOADED.clear()
    plugins_mod._LOADED.update(loaded)


def per_image_rows(table):
    """The rows whose ``n`` is every image of the cell (not a class's recall or the success rate's subset)."""
    return table[~table["metric"].str.startswith("recall_") & (table["metric"] != "attack_success_rate")]


# --- shared by the CLI and data tests ----------------------------------------------------------
WIDE = {"COLUMNS": "250"}  # rich wraps at 80 columns otherwise


@pytest.fixture(scope="module")
def cli():
    return CliRunner()


def cli_text(result) -> str:
    """stdout and stderr together, rich's line wrapping undone."""
    parts = [result.output]
    try:
        if result.stderr and result.stderr not in result.output:
            parts.append(result.stderr)
    except ValueError:  # stderr not captured separately
        pass
    return " ".join(" ".join(parts).split())


def make_mini_dataset(root: Path, per_class: int = 2) -> Path:
    """A generic-layout real dataset: ``root/<class>/img<i>.png``, small noisy RGB images, no masks."""
    from robustbench_wbc.data import CLASSES

    rng = np.random.default_rng(0)
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"img{i}.png")
    return root
