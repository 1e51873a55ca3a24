"""Data for pretraining and evaluation: robust ImageFolder, augmentations, loaders."""
from .folder import IMG_EXTENSIONS, CorruptDataError, SafeImageFolder, pil_loader
from .gpu_aug import BatchAugment
from .loader import IndexedDataset, build_dataset, build_pretrain_loader, epoch_seed, set_loader_epoch
from .synthetic import SyntheticShapes
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GaussianBlur,
    TwoCropsTransform,
    build_crop_transform,
    build_eval_transform,
    build_moco_v2_transform,
)

__all__ = [
    "IMG_EXTENSIONS", "CorruptDataError", "SafeImageFolder", "pil_loader", "BatchAugment", "IndexedDataset",
    "build_dataset", "build_pretrain_loader", "epoch_seed", "set_loader_epoch", "SyntheticShapes",
    "IMAGENET_MEAN", "IMAGENET_STD", "GaussianBlur", "TwoCropsTransform", "build_crop_transform",
    "build_eval_transform", "build_moco_v2_transform",
]
