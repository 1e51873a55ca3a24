"""The batched backend draws the same augmentation distribution as the paper's PIL path.

Distributions: 20,000 seeded draws of every random parameter of the batched path
(``build_crop_transform`` + ``BatchAugment.sample_params``) against as many draws of the
PIL path as configured in ``build_moco_v2_transform``, sampled by torchvision's own
``get_params`` and the transforms' ``p`` attributes. Continuous parameters: two-sample
Kolmogorov-Smirnov; probabilities: two-proportion z-test; the jitter order: chi-square
over the 24 permutations; all at alpha = 1e-3 (seeded, so deterministic). Each check is
shown to reject a deliberately wrong parameter (e.g. p 0.75 instead of 0.8).

Pixels: each op and the whole photometric chain against torchvision's functional ops
on PIL images (what the paper's path runs) with the same parameters; tolerances in
units of 1/255 are stated per op (PIL rounds to uint8 after every op and quantises hue
to 256 levels; its Gaussian blur is a box-blur approximation).
"""
from __future__ import annotations

import math
import random
from itertools import permutations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter
from torchvision import transforms as T

from siambench.pretrain.data import gpu_aug
from siambench.pretrain.data.gpu_aug import AugParams, BatchAugment
from siambench.pretrain.data.synthetic import SyntheticShapes
from siambench.pretrain.data.transforms import build_crop_transform, build_moco_v2_transform

N = 20_000
ALPHA = 1e-3
Z_CRIT = 3.29  # two-sided normal quantile at 1e-3
Z_ONE_SIDED = 3.09  # one-sided normal quantile at 1e-3 (chi-square's upper tail)
_PERM_INDEX = {p: i for i, p in enumerate(permutations(range(4)))}


# ----------------------------------------------------------------------------- tests of two samples
def ks_rejects(a: np.ndarray, b: np.ndarray) -> bool:
    """Two-sample Kolmogorov-Smirnov at ALPHA (asymptotic critical value)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    d = np.abs(np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(b, grid, side="right") / len(b)).max()
    n, m = len(a), len(b)
    return d > math.sqrt(-0.5 * math.log(ALPHA / 2)) * math.sqrt((n + m) / (n * m))


def proportion_rejects(a: np.ndarray, b: np.ndarray) -> bool:
    pa, pb = a.mean(), b.mean()
    pool = (a.sum() + b.sum()) / (len(a) + len(b))
    se = math.sqrt(pool * (1 - pool) * (1 / len(a) + 1 / len(b))) or 1e-12
    return abs(pa - pb) / se > Z_CRIT


def chi2_rejects(a: np.ndarray, b: np.ndarray, k: int) -> bool:
    """Homogeneity of two samples of categories 0..k-1 (Wilson-Hilferty critical value)."""
    table = np.stack([np.bincount(a, minlength=k), np.bincount(b, minlength=k)]).astype(float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = ((table - expected) ** 2 / np.maximum(expected, 1e-12)).sum()
    dof = k - 1
    crit = dof * (1 - 2 / (9 * dof) + Z_ONE_SIDED * math.sqrt(2 / (9 * dof))) ** 3
    return stat > crit


# ----------------------------------------------------------------------------- draws of both paths
def pil_path_draws(seed: int = 0) -> dict[str, np.ndarray]:
    """The photometric parameters of N views of ``build_moco_v2_transform`` (torchvision's samplers)."""
    tf = build_moco_v2_transform(224)
    jitter_apply, gray, blur_apply = tf.transforms[1], tf.transforms[2], tf.transforms[3]
    cj, blur = jitter_apply.transforms[0], blur_apply.transforms[0]
    torch.manual_seed(seed)
    random.seed(seed)
    out: dict[str, list] = {k: [] for k in ("jitter", "b", "c", "s", "h", "order", "gray", "blur", "sigma")}
    for _ in range(N):
        out["jitter"].append(not jitter_apply.p < torch.rand(1))  # RandomApply: skipped iff p < u
        fn_idx, b, c, s, h = T.ColorJitter.get_params(cj.brightness, cj.contrast, cj.saturation, cj.hue)
        for k, v in zip("bcsh", (b, c, s, h)):
            out[k].append(v)
        out["order"].append(_PERM_INDEX[tuple(fn_idx.tolist())])
        out["gray"].append(bool(torch.rand(1) < gray.p))
        out["blur"].append(not blur_apply.p < torch.rand(1))
        out["sigma"].append(random.uniform(*blur.sigma))  # GaussianBlur.__call__'s draw
    return {k: np.asarray(v) for k, v in out.items()}


def batched_draws(aug: BatchAugment, seed: int = 1) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    p = aug.sample_params(N)
    f = p.factors.numpy()
    return {"jitter": p.jitter.numpy(), "b": f[:, 0], "c": f[:, 1], "s": f[:, 2], "h": f[:, 3],
            "order": np.asarray([_PERM_INDEX[tuple(o)] for o in p.order.tolist()]),
            "gray": p.gray.numpy(), "blur": p.blur.numpy(), "sigma": p.sigma.numpy()}


def photometric_mismatches(pil: dict[str, np.ndarray], ours: dict[str, np.ndarray]) -> set[str]:
    bad = {k for k in ("jitter", "gray", "blur") if proportion_rejects(pil[k], ours[k])}
    bad |= {k for k in ("b", "c", "s", "h", "sigma") if ks_rejects(pil[k], ours[k])}
    if chi2_rejects(pil["order"], ours["order"], 24):
        bad.add("order")
    return bad


@pytest.fixture(scope="module")
def pil_draws():
    return pil_path_draws()


def test_photometric_parameters_match_the_pil_path(pil_draws):
    assert photometric_mismatches(pil_draws, batched_draws(BatchAugment())) == set()


@pytest.mark.parametrize("wrong, name", [
    (dict(jitter_p=0.75), "jitter"), (dict(grayscale_p=0.23), "gray"), (dict(blur_p=0.47), "blur"),
    (dict(jitter=(0.45, 0.4, 0.4, 0.1)), "b"), (dict(jitter=(0.4, 0.35, 0.4, 0.1)), "c"),
    (dict(jitter=(0.4, 0.4, 0.45, 0.1)), "s"), (dict(jitter=(0.4, 0.4, 0.4, 0.11)), "h"),
    (dict(blur_sigma=(0.1, 2.2)), "sigma"), (dict(blur_sigma=(0.2, 2.0)), "sigma"),
])
def test_each_check_rejects_a_wrong_parameter(pil_draws, wrong, name):
    assert name in photometric_mismatches(pil_draws, batched_draws(BatchAugment(**wrong)))


def test_order_check_rejects_a_biased_permutation(pil_draws):
    ours = batched_draws(BatchAugment())
    biased = ours["order"].copy()
    biased[: N // 10] = 0  # 10 % always b, c, s, h
    assert "order" in photometric_mismatches(pil_draws, {**ours, "order": biased})


def _crop_draws(tf: T.Compose, seed: int) -> dict[str, np.ndarray]:
    rrc, flip = tf.transforms[0], next(t for t in tf.transforms if isinstance(t, T.RandomHorizontalFlip))
    img = Image.new("RGB", (500, 375))  # ImageNet's typical size
    torch.manual_seed(seed)
    scale, ratio, flips = [], [], []
    for _ in range(N // 4):
        _, _, h, w = T.RandomResizedCrop.get_params(img, rrc.scale, rrc.ratio)
        scale.append(h * w / (500 * 375))
        ratio.append(math.log(w / h))
        flips.append(bool(torch.rand(1) < flip.p))
    assert rrc.size == [224, 224] or rrc.size == (224, 224)
    return {"scale": np.asarray(scale), "ratio": np.asarray(ratio), "flip": np.asarray(flips)}


def test_crop_and_flip_match_the_pil_path():
    pil, ours = _crop_draws(build_moco_v2_transform(224), 0), _crop_draws(build_crop_transform(224), 1)
    assert not ks_rejects(pil["scale"], ours["scale"]) and not ks_rejects(pil["ratio"], ours["ratio"])
    assert not proportion_rejects(pil["flip"], ours["flip"])
    wrong = _crop_draws(build_crop_transform(224, scale=(0.25, 1.0)), 1)
    assert ks_rejects(pil["scale"], wrong["scale"])
    assert build_crop_transform(224).transforms[0].interpolation == build_moco_v2_transform(224).transforms[0].interpolation


# ----------------------------------------------------------------------------- pixels
@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    torch.manual_seed(0)
    shapes, crop = SyntheticShapes(12, 96, seed=1), build_crop_transform(64)
    return torch.stack([crop(shapes.image(i)) for i in range(12)])  # uint8 12x3x64x64


_PIL_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


@pytest.mark.parametrize("op_id, factor, mean_tol, max_tol", [
    (0, 1.3, 0.5, 1.01), (0, 0.65, 0.5, 1.01), (1, 0.7, 0.6, 1.6), (1, 1.35, 0.6, 1.6),
    (2, 1.35, 0.5, 1.3), (2, 0.6, 0.5, 1.3), (3, 0.08, 1.2, 8.0), (3, -0.1, 1.2, 8.0)])
def test_jitter_ops_match_torchvision_on_pil(crops, op_id, factor, mean_tol, max_tol):
    """Tolerances (/255): b/c/s differ by PIL's uint8 rounding (<= ~1 level), hue by its 8-bit H."""
    x = crops.float() / 255
    ours = gpu_aug._JITTER_OPS[op_id](x.clone(), torch.full((len(x),), factor))
    ref = torch.stack([TF.to_tensor(_PIL_OPS[op_id](TF.to_pil_image(c), factor)) for c in crops])
    d = (ours - ref).abs() * 255
    assert d.mean() < mean_tol and d.max() < max_tol


def test_grayscale_and_blur_match_pil(crops):
    x, pil = crops.float() / 255, [TF.to_pil_image(c) for c in crops]
    gray = torch.stack([TF.to_tensor(TF.rgb_to_grayscale(im)) for im in pil])
    assert ((gpu_aug.grayscale(x) - gray).abs() * 255).max() < 0.51  # PIL rounds L to an integer
    for sigma in (0.1, 0.5, 1.0, 2.0):
        ours = gpu_aug._gaussian_blur(x, torch.full((len(x),), sigma), 2.0)
        ref = torch.stack([TF.to_tensor(im.filter(ImageFilter.GaussianBlur(radius=sigma))) for im in pil])
        d = (ours - ref).abs() * 255
        # PIL approximates the Gaussian by box blurs: close on average, a few levels inside,
        # more at the image border where its box passes clamp differently
        assert d.mean() < 0.25 and d[..., 8:-8, 8:-8].max() < 5.0 and d.max() < 30.0


def _pil_replay(crop: torch.Tensor, p: AugParams, k: int) -> torch.Tensor:
    """The PIL path's photometric ops (jitter in ``order``, grayscale, blur) with sample k's parameters."""
    img = TF.to_pil_image(crop)
    if p.jitter[k]:
        for op in p.order[k].tolist():
            img = _PIL_OPS[op](img, float(p.factors[k, op]))
    if p.gray[k]:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    if p.blur[k]:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(p.sigma[k])))
    return TF.to_tensor(img)


def test_whole_chain_matches_the_pil_path_on_the_same_parameters(crops):
    aug = BatchAugment(mean=(0, 0, 0), std=(1, 1, 1))
    torch.manual_seed(3)
    p = aug.sample_params(len(crops))
    ours = aug(crops, p)
    ref = torch.stack([_pil_replay(c, p, k) for k, c in enumerate(crops)])
    per_sample = ((ours - ref).abs() * 255).flatten(1).mean(1)
    assert per_sample.mean() < 1.5 and per_sample.max() < 3.0  # /255
    # the comparison can fail: other parameters give views far outside the tolerance
    torch.manual_seed(4)
    q = aug.sample_params(len(crops))
    other = ((aug(crops, q) - ref).abs() * 255).flatten(1).mean(1)
    assert other.mean() > 4 * per_sample.mean()


# ----------------------------------------------------------------------------- no host<->device traffic
class _CopyCounter:
    """Counts host->device transfers into non-CPU tensors (``to``, ``cuda``, ``new_tensor``, ``tensor``...)."""

    def __init__(self) -> None:
        self.n = 0
        self._saved: list[tuple[object, str, object]] = []

    def _patch(self, owner: object, name: str, counts) -> None:
        fn = getattr(owner, name)
        self._saved.append((owner, name, fn))

        def wrapped(*a, **k):
            out = fn(*a, **k)
            if counts(a, out):
                self.n += 1
            return out
        setattr(owner, name, wrapped)

    def __enter__(self) -> "_CopyCounter":
        def lands(out) -> bool:
            return isinstance(out, torch.Tensor) and out.device.type != "cpu"

        self._patch(torch.Tensor, "to", lambda a, out: a[0].device.type == "cpu" and lands(out))
        self._patch(torch.Tensor, "cuda", lambda a, out: True)
        self._patch(torch.Tensor, "copy_", lambda a, out: a[1].device.type == "cpu" and lands(out))
        self._patch(torch.Tensor, "new_tensor", lambda a, out: lands(out))
        for name in ("tensor", "as_tensor", "from_numpy"):
            self._patch(torch, name, lambda a, out: lands(out))
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, fn in reversed(self._saved):
            setattr(owner, name, fn)


def test_device_half_makes_one_host_to_device_copy_and_no_read_back():
    """Run on the ``meta`` device: a stand-in accelerator whose tensors the host cannot read
    (``item``/``tolist``/``nonzero`` on it raise), so any device->host sync would fail here,
    and every copy onto it is a host->device transfer. (The previous code made 45 per call at N=64.)"""
    aug = BatchAugment(channels_last=True).to("meta")
    x = torch.zeros(64, 3, 24, 24, dtype=torch.uint8, device="meta")
    torch.manual_seed(0)
    with _CopyCounter() as copies:
        y = aug(x)
        y = aug(x)
    assert copies.n == 2  # one per call
    assert y.shape == (64, 3, 24, 24) and y.device.type == "meta"
    with pytest.raises(Exception):  # the stand-in really refuses host reads
        torch.zeros(2, device="meta").sum().item()


def test_copy_counter_counts_per_op_copies():
    with _CopyCounter() as copies:
        idx = torch.arange(5)
        for _ in range(3):
            idx.to("meta")
        torch.zeros(2, device="meta").new_tensor([1.0, 2.0])
    assert copies.n == 4


def test_gpu_configs_default_to_batched_and_cpu_runs_to_pil():
    from pathlib import Path

    from siambench.pretrain.config import get_cfg
    from siambench.pretrain.utils.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs" / "pretrain"
    assert get_cfg().DATA.AUG_BACKEND == "pil"  # the paper's path, and the faster one on CPUs
    for f in sorted(root.glob("simsiam_r50_*.yaml")) + [root / "ablations" / "asym.yaml"]:
        assert load_config(get_cfg(), f).DATA.AUG_BACKEND == "batched", f.name
    assert load_config(get_cfg(), root / "synth_r18.yaml").DATA.AUG_BACKEND == "pil"  # the CPU demo
