"""The transfer trainer's ``DatasetMapper``: 16-bit greyscale images scaled to 8 bits, not clipped.

detectron2's ``read_image`` converts an image with ``PIL.Image.convert("RGB")``, which clips
16-bit greyscale images (Pillow modes ``I;16``/``I``) at 255: a 0..65535 ramp comes out
99.6 % white. :func:`read_image` scales them with :func:`siambench.pretrain.utils.images.to_8bit`
first, the rule pretraining's loader uses. Every other image, and the formats ``None`` (raw
array) and ``"L"`` (semantic-segmentation labels: class ids, not intensities), go through
detectron2's ``read_image`` unchanged.

:class:`TransferDatasetMapper` is what :class:`siambench.transfer.trainer.TransferTrainer`'s
``build_train_loader``/``build_test_loader`` hand to detectron2's loaders (the hook PointRend's
``train_net.py`` uses for its own mapper). detectron2's own ``detection_utils`` is not changed:
its stock tools (``tools/train_net.py``, the visualizers) read 16-bit images as detectron2 does.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from PIL import Image
from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager
from siambench.pretrain.utils.images import HIGH_DEPTH_MODES, to_8bit

__all__ = ["TransferDatasetMapper", "read_image"]


def read_image(file_name: str, format: str | None = None) -> np.ndarray:
    """detectron2's ``detection_utils.read_image``, except that a 16-bit greyscale image read as
    RGB/BGR/YUV is scaled to 8 bits (after EXIF orientation, like every image) instead of clipped."""
    if format not in (None, "L"):
        with PathManager.open(file_name, "rb") as f, Image.open(f) as image:  # reads the header only
            high_depth = image.mode in HIGH_DEPTH_MODES
        if high_depth:
            raw = utils.read_image(file_name, format=None)  # EXIF-oriented, uint16/int32, not converted
            return utils.convert_PIL_to_numpy(to_8bit(Image.fromarray(raw)), format)
    return utils.read_image(file_name, format=format)


class TransferDatasetMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` reading images with :func:`read_image`.

    Why ``__call__`` is overridden: ``DatasetMapper.__call__`` reads the image inline (its
    comment: "Write your own image loading if it's not from a file") and offers no hook for
    the decoding, so this one is detectron2 v0.6's with that single call replaced. A test
    checks that it maps 8-bit images exactly as ``DatasetMapper`` does (train and test mode).
    """

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        sem_seg_gt = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
