"""Smoke tests of the benchmark scripts: they import and their core runs at a tiny size. No timing is asserted."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_wbc.models.networks import Normalize

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402
import bench_attack_throughput as bat  # noqa: E402


class TinyNet(nn.Module):
    """A few thousand weights under the suite's contract: [0, 1] in, ``{"logits": ...}`` out, BatchNorm inside."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.body = nn.Sequential(Normalize(), nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.body(x)}


@pytest.fixture()
def tiny():
    """A tiny model in eval mode, 8 images and labels: 6 labels are the model's own answers, 2 are wrong."""
    torch.manual_seed(0)
    model = TinyNet().eval()
    images = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        labels = model(images)["logits"].argmax(1)
    labels[:2] = (labels[:2] + 1) % 5  # two images wrong before any attack
    return model, images, labels


def test_markdown_table_and_timer():
    text = _common.markdown_table(["a", "b"], [["x", 1], ["y", 2.5]])
    assert text.splitlines() == ["| a | b |", "|---|---:|", "| x | 1 |", "| y | 2.5 |"]
    with pytest.raises(ValueError):
        _common.markdown_table(["a", "b"], [["x"]])
    t = _common.timed(lambda: torch.rand(1).item(), repeats=3, warmup=1, seed=5)
    assert len(t.times) == 3 and t.median >= 0
    assert t.result == _common.timed(lambda: torch.rand(1).item(), repeats=1, seed=5).result  # reseeded
    assert _common.order("abc", 0) == ["a", "b", "c"]
    orders = [_common.order(range(10), r) for r in range(4)]
    assert all(sorted(o) == list(range(10)) for o in orders) and orders[1] == _common.order(range(10), 1)
    before = [o[o.index(3) - 1] for o in orders]  # item 3's predecessor (cyclically) in each repeat
    assert len(set(before)) > 1 and len({o[0] for o in orders}) > 1
    lines = _common.machine_lines(("torch",))
    assert lines[0].startswith("- machine:") and f"torch {torch.__version__.split('+')[0]}" in lines[2]


def test_attack_throughput_core(tiny):
    model, images, labels = tiny
    s = bat.Settings(batch=4)  # two batches of 4
    chosen = bat.variants(explore=True)
    m = bat.measure_model("tiny", "standard", model, images, labels, s, chosen, repeats=2, log=lambda _: None)

    assert m.clean_ok.tolist() == [False, False] + [True] * 6
    assert set(m.results) == set(chosen) and set(bat.VARIANTS) <= set(chosen)
    for name, r in m.results.items():
        assert len(r.times) == 2 and all(t > 0 for t in r.times)
        assert r.robust.dtype == torch.bool and r.robust.shape == (8,)
        assert not (r.robust & ~m.clean_ok).any(), name  # a miss stays a miss
        assert r.robust_accuracy <= m.clean_accuracy
        assert r.image_steps_per_s == pytest.approx(8 * s.steps / r.median)
    assert m.ratio("torchattacks") == 1.0 and m.work_ratio("torchattacks") == 1.0
    # passes: the libraries and the bare loop run every step on every image; ours only the clean-correct
    # ones, a forward and a backward pass per step (the last iterate is scored by the verdict pass)
    nominal = (8 * s.steps, 8 * s.steps)
    assert m.results["torchattacks"].passes == m.results["art"].passes == m.results["bare"].passes == nominal
    fwd, bwd = m.results["ours"].passes
    assert 0 < bwd == fwd <= 6 * s.steps
    assert m.results["bare-exit"].passes[0] <= 6 * s.steps
    assert m.work_ratio("ours") >= 1.0
    assert m.verdict_diff("ours") == 0.0
    assert 0.0 <= m.verdict_diff("ours-bf16") <= 1.0 and m.noise_floor is not None
    assert m.gflop_step > m.gflop_forward > 0
    # the model comes back as it was: eval mode, weights trainable, no gradients left, contiguous layout
    assert not model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())

    text = bat.render([m], s, 8, 2, {"fp32": 100.0, "fp32 mm": 90.0, "fp32 conv": 100.0, "bf16 mm": 200.0, "bf16 conv": 210.0})
    rows = [line for line in text.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == len(chosen)
    assert [r.split(" | ")[1] for r in rows] == [v.label for v in chosen.values()]
    assert "| model | variant | time (s) | image-steps/s | × torchattacks | passes fwd/bwd | work ratio |" in text
    assert "- machine:" in text and "- settings: 8 images" in text
    ours = next(r for r in rows if "fp32" in r.split(" | ")[1])
    assert "≥ 2.0×" in ours  # the goal is printed next to the number


def test_every_variant_agrees_on_an_attack_that_cannot_move(tiny):
    """At eps 0 every attack returns the clean images: all verdicts equal the clean ones (ART refuses eps 0)."""
    model, images, labels = tiny
    s = bat.Settings(eps=0.0, batch=8)
    chosen = {k: v for k, v in bat.variants(explore=True).items() if k != "art"}
    m = bat.measure_model("tiny", "at", model, images, labels, s, chosen, repeats=1, clock="cpu", log=lambda _: None)
    for name, r in m.results.items():
        assert torch.equal(r.robust, m.clean_ok), name
    assert "≥ 1.0×" in bat.goal_text(m, "ours")


def test_trained_pair_is_cached(tmp_path, monkeypatch):
    """Training runs once; a second call loads both models from the cache."""
    from robustbench_wbc.models.zoo import Recipe

    def tiny_recipes(image_size=32):
        std = Recipe("t", 16, use_labels=True, use_masks=False, steps=2, batch_size=8, val_images=8, val_every=2,
                     image_size=32)
        return std, Recipe("t-at", 16, use_labels=True, use_masks=False, steps=2, batch_size=8, val_images=8,
                           val_every=2, image_size=32, adv_train="fgsm-rs", adv_eps=8 / 255)

    monkeypatch.setattr(bat, "recipes", tiny_recipes)
    monkeypatch.setattr(bat, "DictNet", lambda arch="x": TinyNet())
    std, at, info = bat.trained_pair(tmp_path, "tiny", 32, log=lambda _: None)
    assert "cached" not in info["standard"] and "train_time_s" in info["at"]
    assert len(list(tmp_path.glob("tiny-*.pt"))) == 2
    std2, at2, info2 = bat.trained_pair(tmp_path, "tiny", 32, log=lambda _: None)
    assert "cached" in info2["standard"] and "cached" in info2["at"]
    for a, b in ((std, std2), (at, at2)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not std2.training and not at2.training


def test_batch_size_bench_runs_the_runners_cell_and_restores_the_default(tiny_cards):
    """Each batch size runs the runner's own cell; the numbers barely move across sizes; the default comes back."""
    import bench_batch_size as bbs

    from robustbench_wbc.bench import runner

    default = runner.BATCH_SIZE
    rows = bbs.measure("tiny_multitask", [3, 8], n_images=8, repeats=2)
    assert runner.BATCH_SIZE == default
    assert {r[1] for r in rows} == {"cls", "seg", "joint"} and len(rows) == 6
    assert [r[2] for r in rows[:2]] == ["3", "8"]
    assert all(0 <= float(r[-1]) < 0.1 for r in rows), rows  # the batch size changes the numbers by float rounding only
    assert all(float(r[3]) > 0 for r in rows) and sum(r[6] == "fastest" for r in rows) == 3


def test_ratio_range_pairs_the_repeats():
    """× torchattacks per repeat: each repeat's torchattacks time over the variant's, lowest and highest."""
    v = bat.Variant("x", "x", None)
    res = {"torchattacks": bat.VariantResult(v, [4.0, 6.0, 5.0], torch.ones(2, dtype=torch.bool), 2, 10),
           "ours": bat.VariantResult(v, [2.0, 2.0, 2.5], torch.ones(2, dtype=torch.bool), 2, 10)}
    m = bat.ModelResult("m", "standard", torch.ones(2, dtype=torch.bool), res, 1.0, 2.0, None)
    assert m.ratio_range("ours") == (2.0, 3.0) and m.ratio("ours") == pytest.approx(5.0 / 2.0)
    assert m.ratio_range("art") is None


def test_device_option(capsys):
    """``--device``: the CPU's clock is the clock itself; a device torch cannot see is a usage error (exit 2)
    that names it and the fix; ``auto`` resolves to what torch sees."""
    assert _common.timer(torch.device("cpu")) is time.perf_counter
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error below cannot happen here")
    threads = torch.get_num_threads()
    for argv in (["--device", "cuda", "--quick"], ["--device", "tpu", "--quick"]):
        with pytest.raises(SystemExit) as exc:
            bat.main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert argv[1] in err and ("--device cpu" in err or "expected one of" in err)
    assert torch.get_num_threads() == threads  # refused before it set any threads
