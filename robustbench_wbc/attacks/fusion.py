"""The engine's crafting copy of a model: the same function in the forms a CPU computes fastest.

Three rewrites, each the same function up to float rounding:

* **BatchNorm folded** (fp32 only). In eval mode a BatchNorm layer is a fixed per-channel affine
  map, so the convolution that feeds it can absorb it (``w' = w·γ/σ``, ``b' = (b − μ)·γ/σ + β``):
  one memory-bound pass over the activations fewer, forward and backward. Not in bf16 crafting:
  folded into bfloat16 weights, the BatchNorm scales round worse, and PGD lost 6 of 256 verdicts on
  a resnet18 where the unfolded model in bf16 lost none.
* **A strided stem as a stride-1 convolution** (:class:`SpaceToDepthConv`): a stride-``s``
  convolution of an image (at most 4 channels) equals a stride-1 convolution of its space-to-depth
  rearrangement (``pixel_unshuffle``, ``s²`` times the channels) with the kernel rearranged alike.
  oneDNN computes the input gradient of a 7×7 stride-2 convolution of 3 channels at a fifth of its
  forward speed; rearranged, at about its forward speed (a timm resnet18's stem at 64 px: forward and
  input gradient 19.5 → 11.4 ms per batch of 64 in fp32).
* **A convolution whose every output sees its whole input map as a matrix product**
  (:class:`WholeMapConv`): on the deepest, smallest maps (a 3×3 convolution of a 2×2 map) every
  kernel tap of every output lands on the map, so the convolution is one dense ``(H·W·C_in) →
  (H'·W'·C_out)`` matrix with no zero blocks, no more multiply-adds than the convolution itself,
  in one GEMM (oneDNN convolutions are slow on 2×2 maps: a resnet18's layer 4 at 64 px, forward and
  input gradient 9.8 → 6.8 ms per batch of 64 in fp32, 5.9 → 1.5 ms in bf16).

In bf16 crafting the copy's convolution and linear weights are cast to bfloat16 once, the cast
autocast makes on every call (the same values: frozen weights are not in autocast's cache).

The engine's attacks (FGSM, PGD, CW) and the libraries the suite wraps (torchattacks, ART,
AutoAttack: ``base.COPY_BACKENDS``) take their gradients through such a copy, kept on channels-last
weights (the libraries get its outputs and input gradients contiguous, from ``HeadView`` and the
pass counter); a plugin's own attack gets the model itself. The clean and adversarial verdicts and
the model checks use the model itself, so a copy can only change which adversarial is found, by
float rounding, never how it is scored.
``make bench`` measures what the copy and its rewrites give (``benchmarks/README.md``).

A copy is made with ``torch.fx`` (the model must trace symbolically) and is used for a batch of
images only if it gives the model's outputs on the first ``PROBE_IMAGES`` images of that batch,
head by head, within ``TOLERANCE`` of their scale, in fp32 (for a bf16 copy, its fp32 form before
the bfloat16 cast, kept beside it for this). A trace records one path through the model's Python
code: a branch on the data that the tracer cannot read (a ``try`` around a value it sees as
symbolic, a path taken only while traced) is fixed in the copy, which may then agree with the model
on some batches and not on others. So each copy keeps digests of the probes it was checked on; a
batch whose first images are new to it is checked once more (a forward pass of those images
through the model and through the copy: 2 × ``PROBE_IMAGES`` images per new batch), and where the
copy fails, that batch is crafted on the model itself (logged once per copy). The other images of a
batch are not checked. Where the copy fails on its first probe, or where no rewrite applies in
fp32, every attack crafts on the model itself. A copy is cached per model object, precision and
``REWRITE_CONVS``, and made again when a parameter or buffer changes: its tensor's address, version
counter, dtype, device or shape moved, and the sum of its values with it (a change of memory layout
alone keeps the copy and its checks).
``ENABLED = False`` turns copies off, ``REWRITE_CONVS = False`` the two convolution rewrites (the
benchmarks measure both).
"""

from __future__ import annotations

import copy as _copy
import hashlib
import itertools
import logging
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

ENABLED = True
REWRITE_CONVS = True
PROBE_IMAGES = 8  # the first images of each batch, on which a copy must reproduce the model's outputs to be used for it
TOLERANCE = 1e-4  # of each head's largest absolute output (at least 1)
STEM_CHANNELS = 4  # a strided convolution of at most this many channels is rewritten (SpaceToDepthConv) ...
STEM_ZERO_TAPS = 0.25  # ... where at most this fraction of its rearranged kernel is zero padding


class _Entry:
    """A model's cached crafting copy for one (precision, ``REWRITE_CONVS``), and the probes it was checked on.

    ``reference`` is the copy's fp32 form, which the checks run: the copy itself in fp32, its state
    before the bfloat16 cast in bf16. ``passed`` and ``failed`` hold the digests of the probes on
    which it did and did not give the model's outputs.
    """

    __slots__ = ("fingerprint", "checksums", "copy", "reference", "passed", "failed", "warned")

    def __init__(self, fingerprint: tuple, checksums: tuple, copy: nn.Module | None, reference: nn.Module | None) -> None:
        self.fingerprint, self.checksums, self.copy, self.reference = fingerprint, checksums, copy, reference
        self.passed: set[tuple] = set()
        self.failed: set[tuple] = set()
        self.warned = False


# model -> {(precision, REWRITE_CONVS): its entry}
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, bool], _Entry]] = weakref.WeakKeyDictionary()


def _tensors(model: nn.Module):
    return itertools.chain(model.parameters(), model.buffers())


def _fingerprint(model: nn.Module) -> tuple:
    """Where the weights are and how often they were written: changes with any in-place update or move."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device, t.shape) for t in _tensors(model))


def _checksums(model: nn.Module) -> tuple:
    """The weights' values in brief: equal after a change of memory layout, which moves every tensor."""
    return tuple(float(t.detach().sum(dtype=torch.float64)) for t in _tensors(model))


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def crafting_copy(model: nn.Module, probe: torch.Tensor, precision: str = "fp32") -> nn.Module | None:
    """Gives the model's crafting copy for ``precision`` (channels-last, weights frozen) to attack the
    batch ``probe``, or None.

    ``model`` must be in eval mode; ``probe`` is the batch to attack, on whose first
    ``PROBE_IMAGES`` images the copy must give the model's outputs (checked once per copy and such
    images). In ``fp32`` its BatchNorm layers are folded; in ``bf16`` its convolution and linear
    weights are bfloat16 (it is run under bfloat16 autocast). None where copies are off, the model
    does not trace, the copy's outputs differ on these images (logged once per copy), or (fp32) no
    rewrite applies.
    """
    if not ENABLED or model.training:
        return None
    key, kind = _fingerprint(model), (precision, REWRITE_CONVS)
    hits = _CACHE.setdefault(model, {})
    entry = hits.get(kind)
    first = probe[:PROBE_IMAGES]
    if entry is None or entry.fingerprint != key:
        sums = _checksums(model)
        if entry is not None and entry.checksums == sums:
            entry.fingerprint = key  # moved, not changed (a layout round trip): the copy and its checks still hold
        else:
            entry = hits[kind] = _Entry(key, sums, *_build(model, first, precision))
            if entry.copy is not None:
                entry.passed.add(_digest(first))  # _build checked it there
    if entry.copy is None or not _reproduces(entry, model, first):
        return None
    return entry.copy.eval()  # a library may have set the mode it found (train)


def _digest(images: torch.Tensor) -> tuple:
    """The images' shape, dtype and a hash of their values (whatever their memory layout)."""
    data = images.detach().contiguous().view(torch.uint8)
    return tuple(images.shape), str(images.dtype), hashlib.blake2b(data.cpu().numpy().tobytes(), digest_size=16).digest()


def _reproduces(entry: _Entry, model: nn.Module, probe: torch.Tensor) -> bool:
    """Whether ``entry``'s copy gives the model's outputs on ``probe``: looked up, or computed once and kept."""
    digest = _digest(probe)
    if digest in entry.passed:
        return True
    if digest in entry.failed:
        return False
    with torch.no_grad():
        want = model(probe)
        try:
            got = entry.reference.eval()(probe)
        except Exception as exc:  # a copy that fails on these images is not used for them
            got = exc
    same = not isinstance(got, Exception) and _same(want, got)
    (entry.passed if same else entry.failed).add(digest)
    if not same and not entry.warned:
        entry.warned = True
        why = f"{type(got).__name__}: {got}" if isinstance(got, Exception) else "other outputs"
        logger.warning("%s: the crafting copy does not reproduce the model's outputs on a batch (%s); attacks on such "
                       "batches craft on the model itself", type(model).__name__, why.splitlines()[0])
    return same


def _build(model: nn.Module, probe: torch.Tensor, precision: str) -> tuple[nn.Module | None, nn.Module | None]:
    """Gives ``(copy, its fp32 form)``, checked on ``probe``; ``(None, None)`` where there is no copy to use."""
    from torch.fx.experimental.optimization import fuse

    name = type(model).__name__
    with torch.no_grad():
        want = model(probe)  # first, so that wrappers that settle on their first call trace as settled
    fold = precision == "fp32" and has_batchnorm(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # a traced deep copy; the model is not touched
            made = fuse(model) if fold else torch.fx.symbolic_trace(_copy.deepcopy(model))
    except Exception as exc:  # a model that does not trace symbolically: craft on it as it is
        logger.info("%s: no crafting copy for attacks, the model does not trace (%s: %s)", name,
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None, None
    made.eval()
    for p in made.parameters():
        p.requires_grad_(False)
    rewritten = _rewrite_convs(made, probe) if REWRITE_CONVS else 0
    if precision == "fp32" and not fold and not rewritten:
        return None, None  # the model itself, in other words
    with torch.no_grad():
        try:  # a trace can succeed and still be wrong (Python that ran once at trace time): try it
            got = made(probe)
        except Exception as exc:
            got = exc
    if isinstance(got, Exception) or not _same(want, got):
        why = f"{type(got).__name__}: {got}" if isinstance(got, Exception) else "other outputs"
        logger.warning("%s: the crafting copy does not reproduce the model's outputs (%s); attacks craft on "
                       "the model itself", name, why.splitlines()[0])
        return None, None
    if precision == "fp32":
        made = made.to(memory_format=torch.channels_last)
        return made, made
    reference = _copy.deepcopy(made).to(memory_format=torch.channels_last)  # what later probes are checked on
    _to_bf16(made)
    return made.to(memory_format=torch.channels_last), reference


def _same(want, got) -> bool:
    if isinstance(want, torch.Tensor):
        want, got = {"": want}, {"": got}
    if not isinstance(want, dict) or not isinstance(got, dict) or set(want) != set(got):
        return False
    for k, a in want.items():
        b = got[k]
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
            return False
        a, b = a.float(), b.float()
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            return False
        if (a - b).abs().max() > TOLERANCE * max(1.0, a.abs().max().item()):
            return False
    return True


# --- the convolution rewrites --------------------------------------------------------------------
def _plain(m: nn.Module) -> bool:
    """A torch Conv2d itself (not a subclass that changes its weight), dense, zero-padded by numbers."""
    return (type(m) is nn.Conv2d and m.groups == 1 and m.dilation == (1, 1) and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _stem(m: nn.Conv2d) -> bool:
    """A strided convolution of an image whose space-to-depth form pads its kernel with few zeros.

    Measured on 2 cores (forward and input gradient, batch 64 at 64 px, fp32 | bf16): 7×7 stride 2,
    16–64 channels out, 1.10–1.65× | 1.15–1.47× (8×8 rearranged, 23 % zeros); 4×4 stride 4 1.17–1.83× |
    1.11–1.47× (no zeros); 5×5 stride 2 (31 %) 0.92–1.44× | 0.83–1.06×; 3×3 stride 2 (44 %) 0.58–0.99× |
    0.54–0.82×.
    """
    s, (kh, kw) = m.stride[0], m.kernel_size
    padded = -(-kh // s) * s * -(-kw // s) * s
    return m.stride[1] == s > 1 and m.in_channels <= STEM_CHANNELS and 1 - kh * kw / padded <= STEM_ZERO_TAPS


def _rewrite_convs(made: nn.Module, probe: torch.Tensor) -> int:
    """Rewrites ``made``'s convolutions in place where a faster form applies; gives how many.

    :class:`WholeMapConv` is decided by the map a convolution sees, so every candidate is wrapped,
    the probe run once, and the wrappers that found no whole map on it are taken out again.
    """
    wrapped = {}
    count = 0
    for name, m in list(made.named_modules()):
        if not _plain(m):
            continue
        if _stem(m):
            _replace(made, name, SpaceToDepthConv(m))
            count += 1
        else:
            wrapped[name] = WholeMapConv(m)
            _replace(made, name, wrapped[name])
    if wrapped:
        with torch.no_grad():
            try:
                made(probe)
            except Exception:  # the check that follows reports it
                pass
    for name, w in wrapped.items():
        if any(w.dense.values()):
            count += 1
        else:
            _replace(made, name, w.conv)
    return count


def _to_bf16(made: nn.Module) -> None:
    """Casts the weights of the layers bfloat16 autocast computes in bfloat16 (convolutions, linear
    layers and their rewrites) to bfloat16: the cast autocast would make on every call, made once."""
    for m in made.modules():  # exactly these types: a subclass may use its weight otherwise (MultiheadAttention's)
        if type(m) in (nn.Conv2d, nn.Linear, SpaceToDepthConv):
            m.to(torch.bfloat16)
        elif isinstance(m, WholeMapConv):
            m.to(torch.bfloat16)
            m.dense = {k: v if v is None else tuple(t.to(torch.bfloat16) if isinstance(t, torch.Tensor) else t for t in v)
                       for k, v in m.dense.items()}


class SpaceToDepthConv(nn.Module):
    """A stride-``s`` convolution as a stride-1 convolution of the input's space-to-depth rearrangement.

    Padded (by the convolution's padding, and up to a multiple of ``s``) and rearranged by
    ``pixel_unshuffle(s)``, the input has ``s²·C`` channels at ``1/s`` the size; the kernel, padded
    up to a multiple of ``s`` with zeros and rearranged alike, is ``ceil(k/s)`` wide. Output
    position ``(i, j)`` sums the same products as the original convolution's.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stride, self.kernel_size, self.padding = conv.stride[0], conv.kernel_size, conv.padding
        s, (kh, kw) = self.stride, conv.kernel_size
        w = F.pad(conv.weight.detach(), (0, -kw % s, 0, -kh % s))
        self.weight = nn.Parameter(F.pixel_unshuffle(w, s), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, (kh, kw), (ph, pw) = self.stride, self.kernel_size, self.padding
        h, w = x.shape[-2:]
        out_h, out_w = (h + 2 * ph - kh) // s + 1, (w + 2 * pw - kw) // s + 1
        x = F.pad(x, (pw, pw + -(w + 2 * pw) % s, ph, ph + -(h + 2 * ph) % s))
        y = F.conv2d(F.pixel_unshuffle(x, s).contiguous(memory_format=torch.channels_last), self.weight, self.bias)
        # a slice's gradient is a fresh contiguous tensor: slice only where there is something to cut
        return y if y.shape[-2:] == (out_h, out_w) else y[..., :out_h, :out_w]


class WholeMapConv(nn.Module):
    """A convolution computed as one matrix product on the maps where every output sees the whole input.

    For an ``H×W`` input where each output position's kernel window covers every input position
    (a 3×3 convolution, padding 1, on a 2×2 map), the convolution is a dense matrix from the
    input's ``H·W·C_in`` values to the output's ``H'·W'·C_out`` with no zero blocks: a GEMM of as
    many multiply-adds as the convolution, computed by ``F.linear`` (MKL's sgemm in fp32, oneDNN's
    GEMM in bfloat16; the same result whatever the number of threads, which oneDNN's 1×1
    convolution of the same product does not give). Built per map size on first use; other sizes
    run the convolution itself.

    Measured on 2 cores (forward and input gradient, batches of 64 and 128, channels in = out,
    64–512): fp32 1.23–1.78× on 2×2 maps, 2.4–8.2× on 1×1 maps; bf16 1.26–3.9× and 1.3–7.6×.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.dense: dict[tuple[int, int], tuple | None] = {}  # (H, W) -> (matrix, bias, H', W'), or None

    def _matrix(self, h: int, w: int) -> tuple | None:
        c = self.conv
        (kh, kw), (sh, sw), (ph, pw) = c.kernel_size, c.stride, c.padding
        out_h, out_w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        # output a's window starts at a·s − p: every window covers the whole map when the first one
        # reaches its last row (h − 1 + p < k) and the last one starts at or before its first (p ≥ (H' − 1)·s)
        whole = all(o >= 1 and n - 1 + p < k and p >= (o - 1) * st
                    for o, n, p, k, st in ((out_h, h, ph, kh, sh), (out_w, w, pw, kw, sw)))
        if not whole:
            return None  # some output misses some input: the matrix would have zero blocks
        weight = c.weight.detach()
        m = weight.new_empty(out_h, out_w, c.out_channels, h, w, c.in_channels)
        for a, b, i, j in itertools.product(range(out_h), range(out_w), range(h), range(w)):
            m[a, b, :, i, j, :] = weight[:, :, i - a * sh + ph, j - b * sw + pw]
        bias = None if c.bias is None else c.bias.detach().repeat(out_h * out_w)
        return m.reshape(out_h * out_w * c.out_channels, h * w * c.in_channels), bias, out_h, out_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) not in self.dense:
            self.dense[(h, w)] = self._matrix(h, w)
        found = self.dense[(h, w)]
        if found is None:
            return self.conv(x)
        m, bias, out_h, out_w = found
        n = len(x)
        flat = x.permute(0, 2, 3, 1).reshape(n, -1)  # (h, w, c) per image: free on channels-last
        y = F.linear(flat, m, bias)
        return y.reshape(n, out_h, out_w, -1).permute(0, 3, 1, 2)
