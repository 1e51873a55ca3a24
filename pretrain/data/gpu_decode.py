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
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg

from .folder import CorruptDataError, pil_loader
from .gpu_aug import BatchAugment
from .transforms import CROP_SCALE

__all__ = ["EncodedImage", "CropSpec", "EncodedBatch", "read_encoded", "EncodedCropTransform",
           "collate_encoded", "DecodeAugment"]

logger = logging.getLogger(__name__)
_DEVICE_MODES = ("RGB", "L")
_PIL_ERRORS = (OSError, SyntaxError, ValueError)  # what PIL raises on a broken file  # JPEG colour modes nvJPEG decodes to RGB


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


class _SharedImages:
    """The images of one batch, decoded once on first use and shared by all its views."""

    def __init__(self, images: list[EncodedImage]) -> None:
        self.images = images
        self.decoded: list[torch.Tensor] | None = None
        self.device: torch.device | None = None

    def decode(self, device: torch.device) -> list[torch.Tensor]:
        if self.decoded is not None and self.device == device:
            return self.decoded
        todo = [k for k, im in enumerate(self.images) if im.encoded]
        out: list[Any] = [im.data.to(device, non_blocking=True) if not im.encoded else None for im in self.images]
        if todo:
            try:
                decoded = decode_jpeg([self.images[k].data for k in todo], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:  # one file spoils the batch: decode one by one, PIL for what the device refuses
                decoded = [self._decode_one(self.images[k], device) for k in todo]
            for k, img in zip(todo, decoded):
                out[k] = img
        self.decoded, self.device = out, device
        return out


    @staticmethod
    def _decode_one(image: EncodedImage, device: torch.device) -> torch.Tensor:
        try:
            return decode_jpeg(image.data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as device_error:  # e.g. a JPEG variant nvJPEG does not support
            try:
                pixels = np.asarray(pil_loader(image.path), dtype=np.uint8)  # HxWx3
            except _PIL_ERRORS as e:
                raise CorruptDataError(f"DATA.DECODE gpu_jpeg: cannot decode {image.path} ({device_error}; PIL: {e}); "
                                       "remove or re-encode it, or use DATA.DECODE pil (which skips unreadable "
                                       "images)") from e
            logger.warning("DATA.DECODE gpu_jpeg: %s decoded by PIL (device decoder: %s)", image.path, device_error)
            return torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(device)


class EncodedBatch:
    """One view of a batch on its way to the device; ``.to`` is lazy (decoding happens in ``DecodeAugment``)."""

    def __init__(self, shared: _SharedImages, boxes: list[tuple[int, int, int, int]], flips: list[bool]) -> None:
        self.shared, self.boxes, self.flips = shared, boxes, flips
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.boxes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "EncodedBatch":
        self.device = torch.device(device)
        return self

    def pin_memory(self) -> "EncodedBatch":  # DataLoader(pin_memory=True): the bytes are tiny, leave them
        return self


def collate_encoded(batch: list[tuple[Any, int]]) -> tuple[Any, torch.Tensor]:
    """``(views, index)`` samples -> (list of ``EncodedBatch`` per view (or one for a single view), indices)."""
    first = batch[0][0]
    single = isinstance(first, CropSpec)
    views = [[s] if single else list(s) for s, _ in batch]  # per sample: its CropSpecs
    shared = _SharedImages([v[0].image for v in views])
    out = [EncodedBatch(shared, [v[k].box for v in views], [v[k].flip for v in views]) for k in range(len(views[0]))]
    index = torch.tensor([i for _, i in batch])
    return (out[0] if single else out), index


class DecodeAugment(torch.nn.Module):
    """``EncodedBatch`` -> decode (batched) -> crop + resize + flip -> ``BatchAugment`` -> float views.

    Args:
        size: output side (DATA.IMAGE_SIZE).
        augment: the photometric half (its ``channels_last`` applies to the output).
    """

    def __init__(self, size: int, augment: BatchAugment) -> None:
        super().__init__()
        self.size, self.augment = size, augment

    def crops(self, batch: EncodedBatch) -> torch.Tensor:
        """Nx3xSxS uint8 crops of the batch's boxes, resized like PIL (bilinear, antialiased)."""
        images = batch.shared.decode(batch.device)
        out = torch.empty(len(batch), 3, self.size, self.size, dtype=torch.uint8, device=batch.device)
        for k, (img, (top, left, h, w), flip) in enumerate(zip(images, batch.boxes, batch.flips)):
            crop = img[None, :, top:top + h, left:left + w].float()
            crop = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True,
                                 align_corners=False)
            if flip:
                crop = crop.flip(-1)
            out[k] = crop[0].round_().clamp_(0, 255)
        return out

    @torch.no_grad()
    def forward(self, batch: EncodedBatch) -> torch.Tensor:
        if not isinstance(batch, EncodedBatch):
            raise TypeError(f"DecodeAugment expects an EncodedBatch (DATA.DECODE gpu_jpeg), got {type(batch).__name__}")
        return self.augment(self.crops(batch))

