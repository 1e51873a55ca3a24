"""Default configuration of ``siambench pretrain``: the official SimSiam ImageNet recipe.

Every key is commented; configs under ``configs/pretrain/`` override a few keys via
``_BASE_``. ``MODEL.METHOD`` picks the method; its own keys live under ``MODEL.<METHOD>``.
Defaults equal the paper / official code (ResNet-50, batch 512, lr 0.05 x
batch/256, cosine, 100 epochs, fixed predictor lr, MoCo v2 augmentation).
"""
from __future__ import annotations

from .utils.config import CfgNode as CN

__all__ = ["get_cfg"]

_C = CN()
_C.OUTPUT_DIR = "output/pretrain"  # checkpoints, metrics.jsonl, config.yaml, log.txt, tb/
_C.SEED = 0  # seeds model init, data order (with the epoch) and augmentations (with epoch and rank)

_C.MODEL = CN()
_C.MODEL.METHOD = "simsiam"  # simsiam | moco_v2 | simclr | byol | swav (pretrain/methods/; SimSiam is the paper's)
_C.MODEL.ARCH = "resnet50"  # any torchvision ResNet: resnet18/34/50/101/152, resnext*, wide_resnet50_2/101_2
# Stem channels of the ResNet (res2's planes); every stage scales by WIDTH / 64. 64 = torchvision's network
# (the paper's); smaller is a deviation for tiny test/smoke models only (pretrain/methods/encoders.py)
_C.MODEL.WIDTH = 64
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

# MoCo v2 (facebookresearch/moco: moco/builder.py, main_moco.py --mlp --moco-t 0.2 --aug-plus --cos).
_C.MODEL.MOCO = CN()
_C.MODEL.MOCO.DIM = 128  # --moco-dim: output of the MLP head 2048 -> 2048 -> 128
_C.MODEL.MOCO.QUEUE = 65536  # --moco-k: negative keys in the queue (a multiple of the global batch)
_C.MODEL.MOCO.MOMENTUM = 0.999  # --moco-m: key encoder theta_k <- m theta_k + (1 - m) theta_q
_C.MODEL.MOCO.TEMPERATURE = 0.2  # --moco-t (MoCo v2)
_C.MODEL.MOCO.SHUFFLE_BN = True  # key batch shuffled across ranks for the key encoder's BN (official); one process: no-op
_C.MODEL.MOCO.SYMMETRIC = False  # official False; True = the SimSiam paper's "repro.+" (symmetrized loss, App.)

# BYOL (Grill et al. 2020, Sec. 3.3 and App. C; no official PyTorch code).
_C.MODEL.BYOL = CN()
_C.MODEL.BYOL.HIDDEN_DIM = 4096  # projector and predictor hidden width (Linear-BN-ReLU-Linear)
_C.MODEL.BYOL.DIM = 256  # projection / prediction dimension
_C.MODEL.BYOL.TAU_BASE = 0.996  # target EMA at step 0, cosine to 1 (official 1000-ep preset; 100/300-ep: 0.99)

# SimCLR (Chen et al. 2020; the SimSiam paper's "repro.+" uses a 3-layer projector with BN).
_C.MODEL.SIMCLR = CN()
_C.MODEL.SIMCLR.HIDDEN_DIM = 2048  # projector hidden width
_C.MODEL.SIMCLR.DIM = 128  # projection dimension (SimCLR paper)
_C.MODEL.SIMCLR.PROJ_LAYERS = 2  # SimCLR v1: 2; SimSiam repro.+: 3
_C.MODEL.SIMCLR.TEMPERATURE = 0.1  # NT-Xent tau

# SwAV (facebookresearch/swav main_swav.py and scripts/swav_*.sh).
_C.MODEL.SWAV = CN()
_C.MODEL.SWAV.HIDDEN_DIM = 2048  # --hidden_mlp
_C.MODEL.SWAV.DIM = 128  # --feat_dim
_C.MODEL.SWAV.PROJ_LAYERS = 2  # official 2 (Linear-BN-ReLU-Linear); SimSiam repro.+: 3
_C.MODEL.SWAV.NUM_PROTOTYPES = 3000  # --nmb_prototypes
_C.MODEL.SWAV.TEMPERATURE = 0.1  # --temperature of the swapped prediction softmax
_C.MODEL.SWAV.EPSILON = 0.05  # --epsilon of Sinkhorn-Knopp
_C.MODEL.SWAV.SINKHORN_ITERS = 3  # --sinkhorn_iterations
_C.MODEL.SWAV.FREEZE_PROTOTYPES_ITERS = 313  # --freeze_prototypes_niters: prototypes get no update for these steps
_C.MODEL.SWAV.QUEUE_LENGTH = 0  # --queue_length (global, 0 = none; official bs256 runs: 3840)
_C.MODEL.SWAV.QUEUE_START_EPOCH = 15  # --epoch_queue_starts
_C.MODEL.SWAV.NUM_SMALL_CROPS = 0  # multi-crop: extra low-res views (official 6; SimSiam's comparison: 0, 2x224)
_C.MODEL.SWAV.SMALL_CROP_SIZE = 96  # --size_crops of the small views
_C.MODEL.SWAV.SMALL_CROP_SCALE = (0.05, 0.14)  # --min/max_scale_crops of the small views

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
# ImageFolder root containing train/ and val/ (ImageNet layout); "" = ImageNet: $SIAMBENCH_IMAGENET, else
# $DETECTRON2_DATASETS/imagenet, else datasets/imagenet (the rule of `siambench doctor`); checked before the run
_C.DATA.ROOT = ""
_C.DATA.IMAGE_SIZE = 224  # RandomResizedCrop output size
_C.DATA.CROP_SCALE = (0.2, 1.0)  # RandomResizedCrop area range (MoCo v2)
_C.DATA.AUGMENTATION = "moco_v2"  # views (data/method_transforms.py): moco_v2 (SimSiam's) | simclr | byol | swav | swav_2x224
_C.DATA.AUG_BACKEND = "pil"  # "pil": official per-sample PIL ops; "batched": PIL crop/flip in workers,
#                              jitter/grayscale/blur/normalise batched on the device (same parameter distributions,
#                              tested). Batched helps on GPUs (the R50 ImageNet configs use it: CPU workers are the
#                              bottleneck there); on CPU-only runs it is slower than PIL, hence this default
_C.DATA.DECODE = "pil"  # JPEG decoding: "pil" in the workers (official); "gpu_jpeg": batched nvJPEG on the GPU
#                         (needs AUG_BACKEND batched; crop boxes drawn in the workers as before). Without CUDA it
#                         falls back to "pil" with a warning. Worth it when the workers are the bottleneck
# DataLoader workers per rank. -1 (DEVIATION, the default) = the CPUs of the process's affinity mask // ranks on
# the node - 1 (data/loader.py resolve_num_workers; 15 on a 16-core 1-GPU node, 11 per rank on 96 cores x 8 GPUs).
# Official: --workers 32 per 8-GPU node = 4 per rank. Reason: the workers are the bottleneck on fast GPUs (per
# core ~80 images/s with PIL, ~134 with the batched backend; an image = 2 views of 224 px), so a fixed 8 left half
# of a 16-core node idle. An explicit count (>= 0) is used as given
_C.DATA.NUM_WORKERS = -1
# Batches each worker prepares ahead (torch's and the official code's 2). Lowered, with a warning, until
# workers x prefetch x batch bytes fits in half the free /dev/shm; a batch per rank is batch x 2 views x 3 x 224^2
# x 4 B = 616 MB at 512 (pil, float32), 154 MB (batched, uint8), ~77 MB (gpu_jpeg, JPEG bytes)
_C.DATA.PREFETCH_FACTOR = 2
_C.DATA.PIN_MEMORY = True  # page-locked batches for async host-to-GPU copies
_C.DATA.PERSISTENT_WORKERS = False  # keep workers across epochs; True loses exact per-epoch replay on resume
_C.DATA.MAX_BAD_FRACTION = 0.01  # stop with an error when more than this fraction of images is unreadable
_C.DATA.STRICT = False  # stop at the first unreadable image (also `--strict-data`)
_C.DATA.CACHE_IN_MEMORY = False  # decode the ImageFolder once and keep the pixels in RAM (small datasets only)
_C.DATA.SYNTHETIC = CN()  # DATA.DATASET synthetic: procedurally generated shapes, label = largest shape
_C.DATA.SYNTHETIC.TRAIN_SIZE = 512  # images in the train split
_C.DATA.SYNTHETIC.VAL_SIZE = 128  # images in the val split (kNN monitor queries)
_C.DATA.SYNTHETIC.IMAGE_SIZE = 64  # side of the generated images in pixels
_C.DATA.SYNTHETIC.NUM_CLASSES = 4  # shapes used: the first 2-6 of the synthetic classes

_C.SOLVER = CN()
_C.SOLVER.EPOCHS = 100  # training epochs
_C.SOLVER.BATCH_SIZE = 512  # global batch, split evenly over ranks
_C.SOLVER.BASE_LR = 0.05  # lr = BASE_LR x BATCH_SIZE / 256
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.WEIGHT_DECAY = 1e-4  # SGD weight decay (all parameters, as official)
_C.SOLVER.FIX_PRED_LR = True  # predictor lr stays at the initial lr (official recommended; 68.1 vs 67.7 top-1)
_C.SOLVER.SCHEDULE_UNIT = "epoch"  # cosine decay updated per "epoch" (official) or per "step"
_C.SOLVER.OPTIMIZER = "sgd"  # "sgd" (SimSiam, MoCo v2) or "lars" (SimCLR, BYOL, SwAV: pretrain/lars.py)
_C.SOLVER.LARS_TRUST = 0.001  # LARS trust coefficient eta (SimCLR/BYOL/SwAV use 1e-3)
_C.SOLVER.LARS_RULE = "larc"  # whose LARS update: "larc" (apex, SwAV), "simclr" or "byol" (pretrain/lars.py)
_C.SOLVER.EXCLUDE_BIAS_BN = False  # biases and BN params without weight decay and LARS adaptation (SimCLR, BYOL)
_C.SOLVER.WARMUP_EPOCHS = 0  # linear lr warmup before the cosine (SimCLR, BYOL, SwAV: 10); needs SCHEDULE_UNIT step
_C.SOLVER.WARMUP_LINSPACE = False  # True: SwAV's np.linspace warmup, peak lr on the last warmup step
_C.SOLVER.START_LR = 0.0  # lr at the start of the warmup (absolute; SwAV 0.3)
_C.SOLVER.FINAL_LR = 0.0  # lr at the end of the cosine (absolute; SwAV 0.0048 at batch 4096)

_C.TRAIN = CN()
_C.TRAIN.AMP = "none"  # autocast: "none" (fp32, official), "bf16", or "fp16" (with GradScaler)
_C.TRAIN.CHANNELS_LAST = False  # NHWC memory format (faster convs with AMP on tensor cores)
_C.TRAIN.COMPILE = False  # torch.compile the model; refused with SyncBN under DDP (graph breaks; pretrain/accel.py)
_C.TRAIN.PRINT_FREQ = 10  # loss/z_std read from the device every N steps (one host sync): console line, one
#                           metrics.jsonl record (period means), non-finite check and collapse monitor act then
_C.TRAIN.CHECKPOINT_PERIOD = 1  # write OUTPUT_DIR/checkpoint_{epoch:04d}.pth every N epochs (and at the end)
# Checkpoint retention, a disk policy (the official code keeps every epoch's checkpoint: 800 x ~300 MB for
# 800 epochs): keep the newest KEEP_LAST checkpoint_*.pth (0 = keep all) plus every KEEP_EVERY-th epoch
# (0 = none) and model_final.pth. Defaults: an 800-epoch run keeps 9 checkpoints + model_final.pth.
_C.TRAIN.KEEP_LAST = 2
_C.TRAIN.KEEP_EVERY = 100
_C.TRAIN.MAX_STEPS_PER_EPOCH = 0  # >0 caps the steps of each epoch (smoke tests, benchmarks); 0 = full epoch

_C.MONITOR = CN()
_C.MONITOR.COLLAPSE_THRESHOLD = 0.1  # collapse when std(z/|z|) < THRESHOLD / sqrt(d) (healthy ~ 1/sqrt(d))
_C.MONITOR.COLLAPSE_PATIENCE = 20  # ... for this many consecutive steps (warning, and abort if enabled);
#                                    checked on each TRAIN.PRINT_FREQ period's mean std, so it acts at period ends
_C.MONITOR.COLLAPSE_ABORT = False  # stop the run (exit code 3) once collapsed, so it does not burn days
# kNN accuracy on frozen features every N epochs (and at the end); 0 = off. Memory per rank (monitors.KnnMonitor):
# bank N_train / ranks x D x 2 B (fp16, sharded) + queries N_val x D x 2 B + one similarity chunk
# 1024 x N_train / ranks x 4 B; ImageNet R50 (D 2048) on 8 GPUs: 0.66 + 0.2 + 0.66 GB (on one GPU: 5.2 + 0.2 + 5.2 GB)
_C.MONITOR.KNN_PERIOD = 0
_C.MONITOR.KNN_K = 200  # neighbours of the weighted kNN (InstDisc protocol)
_C.MONITOR.KNN_T = 0.1  # temperature of the kNN vote weights
_C.MONITOR.KNN_TRAIN_SUBSET = 0  # >0: use only this many train images as the kNN bank (faster); 0 = all
_C.MONITOR.TENSORBOARD = True  # write OUTPUT_DIR/tb event files


def get_cfg():
    """A fresh, mutable copy of the defaults."""
    return _C.clone()
