"""Config defaults for the encoder evaluations and the supervised baseline.

Each command gets its own defaults (``lincls``, ``knn``, ``supervised``) so that a
typo in a YAML file fails loudly instead of setting a key another command uses.
Defaults are the official recipes at full ImageNet scale; the tiny synthetic
configs under ``configs/{lincls,knn,supervised}/`` name every deviation.
"""
from __future__ import annotations

from .utils.config import CfgNode

__all__ = ["get_lincls_defaults", "get_knn_defaults", "get_supervised_defaults"]


def _common(output_dir: str) -> CfgNode:
    """Keys shared by every command; the pipeline overrides them uniformly."""
    _C = CfgNode()
    _C.OUTPUT_DIR = output_dir  # where results, checkpoints and config.yaml are written
    _C.SEED = 0  # seeds torch/random on every rank (rank is added so ranks differ)

    _C.MODEL = CfgNode()
    _C.MODEL.ARCH = "resnet50"  # torchvision ResNet name (resnet18, resnet50, ...)
    # Stem channels (every stage scales by WIDTH / 64): 64 = torchvision's network; smaller only for tiny
    # test models (pretrain/methods/encoders.py); lincls and knn take it from MODEL.WEIGHTS (as convert does)
    _C.MODEL.WIDTH = 64
    _C.MODEL.DEVICE = "auto"  # "auto" (CUDA when available), "cuda" or "cpu"

    _C.DATA = CfgNode()
    # ImageFolder root with train/<class>/ and val/<class>/; "" = ImageNet: $SIAMBENCH_IMAGENET,
    # else $DETECTRON2_DATASETS/imagenet, else datasets/imagenet (as `siambench doctor`)
    _C.DATA.ROOT = ""
    _C.DATA.IMAGE_SIZE = 224  # crop size; evaluation resizes to IMAGE_SIZE * 256/224 first
    _C.DATA.CROP_SCALE = (0.08, 1.0)  # RandomResizedCrop area range of training images (torchvision's default)
    # data-loading processes per rank; -1 = as pretraining's: the CPUs of this process's affinity mask
    # divided among the node's ranks, less one (data.loader.resolve_num_workers; 15 on a 16-core 1-GPU node)
    _C.DATA.NUM_WORKERS = -1
    _C.DATA.STRICT = False  # True: any unreadable image is an error instead of being skipped
    _C.DATA.MAX_BAD_FRACTION = 0.01  # abort if more than this fraction of images is unreadable
    _C.DATA.CACHE_IN_MEMORY = False  # decode the images once and keep the pixels in RAM (small datasets only)

    _C.TRAIN = CfgNode()
    _C.TRAIN.PRINT_FREQ = 10  # progress line, device->host read of loss/acc (1 sync) and NaN check every N steps
    return _C


def get_lincls_defaults() -> CfgNode:
    """Linear evaluation: the official SimSiam ``main_lincls.py --lars`` recipe."""
    _C = _common("runs/lincls")
    # Checkpoint whose encoder is evaluated: siambench, official SimSiam/MoCo, torchvision
    # or a plain state_dict (see convert.checkpoints.load_backbone_state_dict).
    _C.MODEL.WEIGHTS = ""
    _C.MODEL.WEIGHTS_FORMAT = ""  # "" = detect; else a format name accepted by convert.checkpoints
    _C.MODEL.NUM_CLASSES = 0  # 0 = number of class folders in DATA.ROOT/train
    _C.MODEL.INIT_STD = 0.01  # classifier weight ~ N(0, INIT_STD^2), bias = 0 (official code)
    _C.MODEL.FEATURE_BN = False  # BatchNorm without affine before the classifier (MAE's probe); official: none

    _C.SOLVER = CfgNode()
    _C.SOLVER.EPOCHS = 90  # official recipe
    _C.SOLVER.BATCH_SIZE = 4096  # global batch (split evenly over ranks)
    _C.SOLVER.BASE_LR = 0.1  # lr = BASE_LR * BATCH_SIZE / 256 (= 1.6 for the recipe)
    _C.SOLVER.MOMENTUM = 0.9  # SGD momentum inside LARS
    _C.SOLVER.WEIGHT_DECAY = 0.0  # the recipe uses none for the linear classifier
    _C.SOLVER.OPTIMIZER = "lars"  # "lars" (recipe, apex LARC clip=False) or "sgd"
    _C.SOLVER.LARS_TRUST = 0.001  # LARS trust coefficient (official code)
    _C.SOLVER.LARS_EPS = 1e-8  # LARS epsilon (apex LARC default)
    _C.SOLVER.SCHEDULE = "cosine"  # per-epoch cosine decay to 0 (official); or "constant"

    _C.TEST = CfgNode()
    _C.TEST.EVAL_PERIOD = 1  # evaluate on DATA.ROOT/val every N epochs (and after the last)
    _C.TEST.BATCH_SIZE = 256  # global batch for evaluation
    return _C


def get_knn_defaults() -> CfgNode:
    """Weighted kNN evaluation (InstDisc protocol, as in the SimSiam kNN monitor)."""
    _C = _common("runs/knn")
    _C.MODEL.WEIGHTS = ""  # checkpoint whose encoder is evaluated (any format lincls accepts)
    _C.MODEL.WEIGHTS_FORMAT = ""  # "" = detect; else a format name accepted by convert.checkpoints

    _C.KNN = CfgNode()
    _C.KNN.K = 200  # neighbours (InstDisc)
    _C.KNN.TEMPERATURE = 0.1  # votes weighted by exp(cosine / TEMPERATURE)
    _C.KNN.BATCH_SIZE = 256  # global batch for feature extraction
    _C.KNN.CHUNK_SIZE = 1024  # test features compared against the bank per chunk (memory bound)
    # The train images are embedded once, with the evaluation transform (no augmentation).
    return _C


def get_supervised_defaults() -> CfgNode:
    """Supervised baseline: torchvision's classic ResNet-50 ImageNet recipe (90 epochs)."""
    _C = _common("runs/supervised")
    _C.MODEL.SYNC_BN = False  # torchvision's recipe uses per-GPU BatchNorm
    _C.MODEL.ZERO_INIT_RESIDUAL = False  # torchvision default

    _C.SOLVER = CfgNode()
    _C.SOLVER.EPOCHS = 90  # torchvision reference
    _C.SOLVER.BATCH_SIZE = 256  # global batch (torchvision: 8 GPUs x 32)
    _C.SOLVER.BASE_LR = 0.1  # lr = BASE_LR * BATCH_SIZE / 256
    _C.SOLVER.MOMENTUM = 0.9
    _C.SOLVER.WEIGHT_DECAY = 1e-4
    _C.SOLVER.SCHEDULE = "step"  # "step" (x0.1 every STEP_SIZE epochs, torchvision) or "cosine"
    _C.SOLVER.STEP_SIZE = 30  # epochs between x0.1 decays for SCHEDULE "step"
    _C.SOLVER.WARMUP_EPOCHS = 0  # linear warm-up from 0 (none in the reference)

    _C.TRAIN.AMP = "none"  # CUDA autocast: "none" (fp32, the reference), "bf16", or "fp16" (with GradScaler)
    _C.TRAIN.CHECKPOINT_PERIOD = 1  # write checkpoint_{epoch:04d}.pth every N epochs (and at the end)
    # Retention (a disk policy, not part of the recipe; the reference keeps every epoch): keep the newest
    # KEEP_LAST checkpoint_*.pth (0 = all) plus every KEEP_EVERY-th epoch (0 = none) and model_final.pth.
    _C.TRAIN.KEEP_LAST = 2
    _C.TRAIN.KEEP_EVERY = 30  # 90 epochs: 30, 60, 90 (the step-decay boundaries)

    _C.TEST = CfgNode()
    _C.TEST.EVAL_PERIOD = 1  # top-1/top-5 on DATA.ROOT/val every N epochs (0 = only at the end)
    _C.TEST.BATCH_SIZE = 256  # global batch for evaluation
    return _C
