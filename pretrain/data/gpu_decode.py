"""Optional JPEG decoding on the device (``DATA.DECODE gpu_jpeg``), batched with nvJPEG.

JPEG decoding is ~14 % of the official PIL pipeline's time per image, the last large
per-image cost left in the CPU workers once the photometric ops run batched on the
GPU (``gpu_aug``). With ``gpu_jpeg`` the workers only read the file bytes, read the
image size from the JPEG header and draw the RandomResizedCrop box and the flip (the
same ``RandomResizedCrop.get_params`` as the PIL path, so the same distribution); the
device then decodes the whole batch in one ``torchvision.io.decode_jpeg`` call, cuts
and resizes every crop (bilinear with antialiasing, as PIL's resize) and hands the
uint8 crops to ``BatchAugment``. Both views of an image share one decode.

Files that nvJPEG cannot take (not baseline JPEG RGB/L, e.g. PNG or CMYK JPEGs) are
decoded by PIL in the worker instead and travel as uint8 pixels; a JPEG the device decoder
refuses at run time is decoded by PIL in the training process (with a warning), and one
that PIL cannot read either stops the run with its path (``CorruptDataError``). The same code runs on
CPU tensors (``decode_jpeg`` decodes on the CPU too), which is how it is tested;
``siambench.pretrain.data.views`` falls back to PIL decoding in the workers where CUDA is absent.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch._utils import _flatten_dense_tensors
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import roi_align

from .folder import CorruptDataError, pil_loader
from .gpu_aug import BatchAugment
from .transforms import CROP_SCALE

__all__ = ["EncodedImage", "CropSpec", "PackedImages", "EncodedBatch", "read_encoded", "EncodedCropTransform",
           "collate_encoded", "DecodeAugment"]

logger = logging.getLogger(__name__)
_DEVICE_MODES = ("RGB", "L")  # JPEG colour modes nvJPEG decodes to RGB
_PIL_ERRORS = (OSError, SyntaxError, ValueError)  # what PIL raises on a broken file


@dataclasses.dataclass
class EncodedImage:
    """A training image as the worker hands it over: JPEG bytes, or pixels where the device cannot decode."""

    data: torch.Tensor  # 1-D uint8 JPEG bytes, or 3xHxW uint8 pixels
    encoded: bool
    width: int
    height: int
    path: str


@dataclasses.dataclass
class CropSpec:
    """One view of an image: the image and its crop box ``(top, left, height, width)`` plus flip."""

    image: EncodedImage
    box: tuple[int, int, int, int]
    flip: bool


def read_encoded(path: str) -> EncodedImage:
    """SafeImageFolder loader for ``gpu_jpeg``: bytes + header size; PIL pixels for non-JPEG/CMYK files."""
    with Image.open(path) as img:  # reads the header only
        width, height = img.size
        if img.format == "JPEG" and img.mode in _DEVICE_MODES:
            with open(path, "rb") as f:
                data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
            return EncodedImage(data, True, width, height, path)
        pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)  # HxWx3
    return EncodedImage(torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous(), False, width, height, path)


class EncodedCropTransform:
    """The geometric half of the MoCo v2 view (RandomResizedCrop box + horizontal flip) without decoding."""

    def __init__(self, size: int = 224, scale: Sequence[float] = CROP_SCALE,
                 ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0), flip_p: float = 0.5) -> None:
        self.size, self.scale, self.ratio, self.flip_p = size, tuple(scale), tuple(ratio), flip_p

    def __call__(self, img: EncodedImage) -> CropSpec:
        stand_in = torch.empty(1, 1, 1).expand(1, img.height, img.width)  # get_params only reads the shape
        box = T.RandomResizedCrop.get_params(stand_in, list(self.scale), list(self.ratio))
        return CropSpec(img, tuple(int(v) for v in box), bool(torch.rand(1) < self.flip_p))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class PackedImages:
    """The images of one batch in three tensors, decoded once on first use and shared by all its views.

    Attributes:
        data: 1-D uint8, every image's JPEG bytes (or 3xHxW pixels) back to back.
        layout: Nx5 int64, per image ``(offset, length, encoded, height, width)`` into ``data``.
        boxes: VxNx5 int64, per view and image ``(top, left, height, width, flip)``.
        paths: the N file paths (error messages, PIL fallback).
    """

    def __init__(self, data: torch.Tensor, layout: torch.Tensor, boxes: torch.Tensor, paths: list[str]) -> None:
        self.data, self.layout, self.boxes, self.paths = data, layout, boxes, paths
        self.decoded: list[torch.Tensor] | None = None
        self.device: torch.device | None = None

    @classmethod
    def pack(cls, views: list[list[CropSpec]]) -> "PackedImages":
        """``views[i][k]``: view k of sample i (all views of a sample share its image)."""
        images = [v[0].image for v in views]
        lengths = [im.data.numel() for im in images]
        offsets = np.cumsum([0] + lengths[:-1])
        layout = torch.tensor([[o, n, im.encoded, im.height, im.width] for o, n, im in zip(offsets, lengths, images)],
                              dtype=torch.int64).view(-1, 5)
        boxes = torch.tensor([[[*s.box, s.flip] for s in (v[k] for v in views)] for k in range(len(views[0]))],
                             dtype=torch.int64).view(len(views[0]), len(views), 5)
        data = torch.cat([im.data.reshape(-1) for im in images])
        return cls(data, layout, boxes, [im.path for im in images])

    def decode(self, device: torch.device) -> list[torch.Tensor]:
        """The N images as 3xHxW uint8 tensors on ``device`` (one batched ``decode_jpeg`` call)."""
        if self.decoded is not None and self.device == device:
            return self.decoded
        parts = self.data.split(self.layout[:, 1].tolist())  # views into the one packed tensor
        heights, widths = self.layout[:, 3].tolist(), self.layout[:, 4].tolist()
        encoded = self.layout[:, 2].bool().tolist()
        out: list[Any] = [None if enc else p.view(3, h, w).to(device, non_blocking=True)
                          for p, enc, h, w in zip(parts, encoded, heights, widths)]
        todo = [k for k, enc in enumerate(encoded) if enc]
        if todo:
            try:
                decoded = decode_jpeg([parts[k] for k in todo], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:  # one file spoils the batch: decode one by one, PIL for what the device refuses
                decoded = [self._decode_one(parts[k], self.paths[k], device) for k in todo]
            for k, img in zip(todo, decoded):
                out[k] = img
        self.decoded, self.device = out, device
        return out

    @staticmethod
    def _decode_one(data: torch.Tensor, path: str, device: torch.device) -> torch.Tensor:
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as device_error:  # e.g. a JPEG variant nvJPEG does not support
            try:
                pixels = np.asarray(pil_loader(path), dtype=np.uint8)  # HxWx3
            except _PIL_ERRORS as e:
                raise CorruptDataError(f"DATA.DECODE gpu_jpeg: cannot decode {path} ({device_error}; PIL: {e}); "
                                       "remove or re-encode it, or use DATA.DECODE pil (which skips unreadable "
                                       "images)") from e
            logger.warning("DATA.DECODE gpu_jpeg: %s decoded by PIL (device decoder: %s)", path, device_error)
            return torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(device)


class EncodedBatch:
    """One view of a batch on its way to the device; ``.to`` is lazy (decoding happens in ``DecodeAugment``)."""

    def __init__(self, packed: PackedImages, view: int) -> None:
        self.packed, self.view = packed, view
        self.device = torch.device("cpu")

    @property
    def boxes(self) -> torch.Tensor:
        """Nx5 int64 ``(top, left, height, width, flip)`` of this view."""
        return self.packed.boxes[self.view]

    def __len__(self) -> int:
        return self.packed.layout.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "EncodedBatch":
        self.device = torch.device(device)
        return self

    def pin_memory(self) -> "EncodedBatch":  # DataLoader(pin_memory=True): the bytes are tiny, leave them
        return self


def collate_encoded(batch: list[tuple[Any, int]]) -> tuple[Any, torch.Tensor]:
    """``(views, index)`` samples -> (list of ``EncodedBatch`` per view (or one for a single view), indices).

    The whole batch crosses the worker -> training process queue as four tensors (packed bytes,
    layout, boxes, indices), i.e. four shared-memory file descriptors whatever the batch size.
    """
    first = batch[0][0]
    single = isinstance(first, CropSpec)
    views = [[s] if single else list(s) for s, _ in batch]  # per sample: its CropSpecs
    packed = PackedImages.pack(views)
    out = [EncodedBatch(packed, k) for k in range(len(views[0]))]
    index = torch.tensor([i for _, i in batch])
    return (out[0] if single else out), index


def _pad_chunks(hw: list[tuple[int, int]], budget: int) -> list[list[int]]:
    """Image indices grouped (smallest first) so that each group, padded to 3 x its largest H x W,
    stays within ``budget`` elements (an image larger than that alone)."""
    chunks: list[list[int]] = []
    hmax = wmax = 0
    for k in sorted(range(len(hw)), key=lambda k: hw[k][0] * hw[k][1]):
        h, w = hw[k]
        nh, nw = max(hmax, h), max(wmax, w)
        if chunks and (len(chunks[-1]) + 1) * 3 * nh * nw <= budget:
            chunks[-1].append(k)
            hmax, wmax = nh, nw
        else:
            chunks.append([k])
            hmax, wmax = h, w
    return chunks


class DecodeAugment(torch.nn.Module):
    """``EncodedBatch`` -> decode (batched) -> crop + resize + flip (batched) -> ``BatchAugment`` -> float views.

    The crops are cut and resized for the whole batch at once, in a constant number of device
    ops (per chunk of ``pad_budget`` padded elements; about 3 chunks for 256 ImageNet-size images):
    the decoded images are flattened into one buffer (one C++ call), gathered into one padded
    NxCxHxW batch whose padding repeats each image's last row and column (so bilinear samples
    at the border equal the clamped ones), and ``torchvision.ops.roi_align`` resamples every box
    to SxS (aligned pixel centres, as bilinear with ``align_corners=False``; ``ceil(box / S)``
    samples per output pixel averaged when shrinking, the antialiasing). Before, each image took
    ~6 Python-level ops (~128 us of host time per crop on a GPU). torchvision's batched device
    decode still synchronises its stream at the start and end of each call: once per batch.

    Args:
        size: output side (DATA.IMAGE_SIZE).
        augment: the photometric half (its ``channels_last`` applies to the output).
        pad_budget: largest padded chunk, in elements (its int64 gather index: 8 bytes each, float32 copy: 4).
    """

    def __init__(self, size: int, augment: BatchAugment, pad_budget: int = 1 << 26) -> None:
        super().__init__()
        self.size, self.augment, self.pad_budget = size, augment, pad_budget

    def _crop_chunk(self, flat: torch.Tensor, meta: torch.Tensor, hmax: int, wmax: int) -> torch.Tensor:
        """Kx3xSxS float crops; ``meta``: Kx8 int64 on the device, (start in ``flat``, top, left, h, w, flip,
        image height, image width) per image."""
        start, top, left, h, w, flip, img_h, img_w = meta.unbind(1)
        dev = flat.device
        ys = torch.arange(hmax, device=dev)[None].minimum(img_h[:, None] - 1)  # KxH, the last row repeated
        xs = torch.arange(wmax, device=dev)[None].minimum(img_w[:, None] - 1)  # KxW, the last column repeated
        chan = torch.arange(3, device=dev)[None] * (img_h * img_w)[:, None]  # Kx3 plane offsets
        index = ((start[:, None] + chan)[:, :, None, None] + (ys * img_w[:, None])[:, None, :, None]
                 + xs[:, None, None, :])  # Kx3xHxW positions in flat
        padded = flat[index].float()
        rois = torch.stack([torch.arange(len(meta), device=dev), left, top, left + w, top + h], 1).float()  # (k, box)
        out = roi_align(padded, rois, (self.size, self.size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return torch.where(flip.bool().view(-1, 1, 1, 1), out.flip(-1), out)

    def crops(self, batch: EncodedBatch) -> torch.Tensor:
        """Nx3xSxS uint8 crops of the batch's boxes, resized like PIL (bilinear, antialiased)."""
        images = batch.packed.decode(batch.device)
        hw = batch.packed.layout[:, 3:5]  # the header's size is the decoded size
        flat = _flatten_dense_tensors(images)  # every image's CHW pixels back to back, one call
        sizes = 3 * hw[:, 0] * hw[:, 1]
        meta = torch.cat([sizes.cumsum(0)[:, None] - sizes[:, None], batch.boxes, hw], 1)  # Nx8 int64, host
        chunks = _pad_chunks(hw.tolist(), self.pad_budget)
        meta = meta.to(flat.device, non_blocking=True)
        outs = [self._crop_chunk(flat, meta[c], *hw[c].max(0).values.tolist()) for c in chunks]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        perm = [k for c in chunks for k in c]  # the chunks hold the images smallest first
        if perm != list(range(len(perm))):  # back to the batch order
            out = out[torch.tensor(perm).argsort().to(out.device, non_blocking=True)]
        return out.round_().clamp_(0, 255).to(torch.uint8)

    @torch.no_grad()
    def forward(self, batch: EncodedBatch) -> torch.Tensor:
        if not isinstance(batch, EncodedBatch):
            raise TypeError(f"DecodeAugment expects an EncodedBatch (DATA.DECODE gpu_jpeg), got {type(batch).__name__}")
        return self.augment(self.crops(batch))
