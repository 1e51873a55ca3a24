"""Default configuration of ``siambench pretrain``: the official SimSiam ImageNet recipe.

Every key is commented; configs under ``configs/pretrain/`` override a few keys via
``_BASE_``. Defaults equal the paper / official code (ResNet-50, batch 512, lr 0.05 x
batch/256, cosine, 100 epochs, fixed predictor lr, MoCo v2 augmentation).
"""
from __future__ import annotations

from .utils.config import CfgNode as CN

__all__ = ["get_cfg"]

_C = CN()
_C.OUTPUT_DIR = "output/pretrain"  # checkpoints, metrics.jsonl, config.yaml, log.txt, tb/
_C.SEED = 0  # seeds model init, data order (with the epoch) and augmentations (with epoch and rank)

_C.MODEL = CN()
_C.MODEL.ARCH = "resnet50"  # any torchvision ResNet: resnet18/34/50/101/152, resnext*, wide_resnet50_2/101_2
_C.MODEL.DEVICE = "auto"  # "auto" (CUDA when available), "cuda" or "cpu"
_C.MODEL.DIM = 2048  # d: output dim of projector and predictor
_C.MODEL.PRED_DIM = 512  # predictor bottleneck width
_C.MODEL.PROJ_HIDDEN_DIM = 0  # projector hidden width; 0 = the encoder's feature dim (2048 for R50), as official
_C.MODEL.PROJ_LAYERS = 3  # projector depth: 3 on ImageNet (the paper uses 2 on CIFAR)
_C.MODEL.BN_CASE = "default"  # BN in the heads, paper Table 3: none (a) | hidden (b) | default (c) | all (d)
_C.MODEL.PREDICTOR = "mlp"  # "mlp"; ablations (Table 1): "none" (collapses), "fixed_random" (collapses)
_C.MODEL.STOP_GRAD = True  # detach the targets z; False collapses (paper Fig. 2)
_C.MODEL.ZERO_INIT_RESIDUAL = True  # zero-init the last BN gamma of each residual block (official)
_C.MODEL.SYNC_BN = True  # convert all BN to SyncBatchNorm when distributed (official)

_C.LOSS = CN()
_C.LOSS.SIMILARITY = "cosine"  # D: "cosine" (paper) or "cross_entropy" (paper Sec. 4.5 ablation)
_C.LOSS.SYMMETRY = "sym"  # "sym": D(p1,z2)/2 + D(p2,z1)/2; "asym": D(p1,z2); "asym2x": two asym pairs (4 views)

# Hypothesis variants of paper Sec. 5 (the targets are per-image eta_x instead of the other view's z).
_C.HYPOTHESIS = CN()
_C.HYPOTHESIS.MODE = "none"  # "none" (SimSiam), "kstep" (k-step alternation), "moving_average" (eta_x EMA)
_C.HYPOTHESIS.K_STEPS = 1  # kstep: targets precomputed with theta^t and cached for k SGD steps; -1 = one epoch
_C.HYPOTHESIS.MOMENTUM = 0.8  # moving_average: eta_x <- m * eta_x + (1 - m) * F(T'(x)) (paper: m = 0.8)
_C.HYPOTHESIS.BANK_DEVICE = ""  # moving_average: where the N x d target bank lives; "" = the model's device

_C.DATA = CN()
_C.DATA.DATASET = "imagefolder"  # "imagefolder" (DATA.ROOT/{train,val}/<class>/*) or "synthetic" (in memory)
_C.DATA.ROOT = ""  # ImageFolder root containing train/ and val/ (ImageNet layout)
_C.DATA.IMAGE_SIZE = 224  # RandomResizedCrop output size
_C.DATA.CROP_SCALE = (0.2, 1.0)  # RandomResizedCrop area range (MoCo v2)
_C.DATA.AUG_BACKEND = "pil"  # "pil": official per-sample PIL ops; "batched": PIL crop/flip in workers,
#                              jitter/grayscale/blur/normalise batched on the device (same op distribution, faster)
_C.DATA.NUM_WORKERS = 8  # DataLoader workers per rank (official: 32 per 8-GPU node = 4; more helps fast GPUs)
_C.DATA.PIN_MEMORY = True  # page-locked batches for async host-to-GPU copies
_C.DATA.PERSISTENT_WORKERS = False  # keep workers across epochs; True loses exact per-epoch replay on resume
_C.DATA.MAX_BAD_FRACTION = 0.01  # stop with an error when more than this fraction of images is unreadable
_C.DATA.STRICT = False  # stop at the first unreadable image (also `--strict-data`)
_C.DATA.CACHE_IN_MEMORY = False  # decode the ImageFolder once and keep the pixels in RAM (small datasets only)
_C.DATA.SYNTHETIC = CN()  # DATA.DATASET synthetic: procedurally generated shapes, label = largest shape
_C.DATA.SYNTHETIC.TRAIN_SIZE = 512  # images in the train split
_C.DATA.SYNTHETIC.VAL_SIZE = 128  # images in the val split (kNN monitor queries)
_C.DATA.SYNTHETIC.IMAGE_SIZE = 64  # side of the generated images in pixels
_C.DATA.SYNTHETIC.NUM_CLASSES = 4  # shapes used (2-4)

_C.SOLVER = CN()
_C.SOLVER.EPOCHS = 100  # training epochs
_C.SOLVER.BATCH_SIZE = 512  # global batch, split evenly over ranks
_C.SOLVER.BASE_LR = 0.05  # lr = BASE_LR x BATCH_SIZE / 256
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.WEIGHT_DECAY = 1e-4  # SGD weight decay (all parameters, as official)
_C.SOLVER.FIX_PRED_LR = True  # predictor lr stays at the initial lr (official recommended; 68.1 vs 67.7 top-1)
_C.SOLVER.SCHEDULE_UNIT = "epoch"  # cosine decay updated per "epoch" (official) or per "step"

_C.TRAIN = CN()
_C.TRAIN.AMP = "none"  # autocast: "none" (fp32, official), "bf16", or "fp16" (with GradScaler)
_C.TRAIN.CHANNELS_LAST = False  # NHWC memory format (faster convs with AMP on tensor cores)
_C.TRAIN.COMPILE = False  # torch.compile the model
_C.TRAIN.PRINT_FREQ = 10  # console progress every N steps (metrics.jsonl gets every step's loss and z_std)
_C.TRAIN.CHECKPOINT_PERIOD = 1  # write OUTPUT_DIR/checkpoint_{epoch:04d}.pth every N epochs (and at the end)
_C.TRAIN.MAX_STEPS_PER_EPOCH = 0  # >0 caps the steps of each epoch (smoke tests, benchmarks); 0 = full epoch

_C.MONITOR = CN()
_C.MONITOR.COLLAPSE_THRESHOLD = 0.1  # collapse when std(z/|z|) < THRESHOLD / sqrt(d) (healthy ~ 1/sqrt(d))
_C.MONITOR.COLLAPSE_PATIENCE = 20  # ... for this many consecutive steps (warning, and abort if enabled)
_C.MONITOR.COLLAPSE_ABORT = False  # stop the run (exit code 3) once collapsed, so it does not burn days
_C.MONITOR.KNN_PERIOD = 0  # kNN accuracy on frozen features every N epochs (and at the end); 0 = off
_C.MONITOR.KNN_K = 200  # neighbours of the weighted kNN (InstDisc protocol)
_C.MONITOR.KNN_T = 0.1  # temperature of the kNN vote weights
_C.MONITOR.KNN_TRAIN_SUBSET = 0  # >0: use only this many train images as the kNN bank (faster); 0 = all
_C.MONITOR.TENSORBOARD = True  # write OUTPUT_DIR/tb event files


def get_cfg():
    """A fresh, mutable copy of the defaults."""
    return _C.clone()
