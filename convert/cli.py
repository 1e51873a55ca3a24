"""``siambench convert IN OUT.pkl``: a pretrained checkpoint -> Detectron2 weights.

Examples::

    siambench convert runs/pretrain/model_final.pth weights/simsiam_r50.pkl --verify
    siambench convert checkpoint_0099.pth.tar simsiam.pkl               # official SimSiam
    siambench convert moco_v2_800ep_pretrain.pth.tar moco.pkl           # MoCo v1/v2
    siambench convert mocov3.pth.tar mocov3.pkl --prefix module.base_encoder.
    siambench convert resnet50-0676ba61.pth supervised.pkl              # torchvision ImageNet

The format is detected from the keys unless ``--format``/``--prefix`` say otherwise.
Exit codes: 0 converted; 2 bad input (a missing, empty, truncated, foreign or code-carrying
checkpoint, a wrong ``--format``/``--prefix``/``--arch``), nothing written; 1 the weights
failed ``--verify``, nothing written.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from siambench.pretrain.utils.errors import exit_2_on_user_error

from .checkpoints import FORMATS, summarize_keys
from .errors import VerificationError
from .residual import off_warning

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="siambench convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="IN", help="checkpoint written by torch.save (.pth, .pth.tar)")
    p.add_argument("output", metavar="OUT.pkl", help="Detectron2 weights to write (atomically)")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="checkpoint layout (default: detect from the keys)")
    p.add_argument("--prefix", default=None, metavar="P",
                   help="key prefix of the ResNet encoder, e.g. module.base_encoder. (MoCo v3)")
    p.add_argument("--arch", default=None, metavar="ARCH",
                   help="expected torchvision architecture (default: recognised from the tensors)")
    p.add_argument("--verify", action="store_true",
                   help="check res2-res5 features against torchvision in Detectron2 backbone, C4 and FPN "
                        "models before writing OUT")
    p.add_argument("--verify-size", type=int, default=224, metavar="N",
                   help="side of the test image for --verify (default: 224)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow checkpoints that need arbitrary unpickling (can run code: trusted files only)")
    return p


@exit_2_on_user_error("siambench convert")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    from .export import convert_checkpoint  # after parsing: --help stays instant

    try:
        prov, report = convert_checkpoint(
            args.input, args.output, fmt=args.format, prefix=args.prefix, arch=args.arch,
            trust_pickle=args.trust_pickle, verify=args.verify, verify_size=args.verify_size,
        )
    except VerificationError as e:  # bad input (any other ConversionError) exits 2 through the decorator
        print(f"siambench convert: error: {e}", file=sys.stderr)
        return 1
    epoch = f", epoch {prov['epoch']}" if prov["epoch"] is not None else ""
    print(f"converted {args.input} -> {args.output}")
    print(f"  format   {prov['source_format']} (prefix {prov['source_prefix']!r})")
    width = f", width {prov['width']}" if prov["width"] != 64 else ""
    print(f"  arch     {prov['arch']}{width}{epoch}")
    print(f"  tensors  {prov['num_tensors']}")
    print(f"  sha256   {prov['source_sha256']}")
    print(f"  unused   {summarize_keys(prov['dropped_keys'], prov['source_prefix'])}")
    print(f"  expects  {prov['input_format']}, PIXEL_MEAN {prov['pixel_mean']}, PIXEL_STD {prov['pixel_std']}, "
          f"STRIDE_IN_1X1 {prov['stride_in_1x1']}")
    print("  resnets  " + ", ".join(f"{k} {v}" for k, v in prov["detectron2_resnets"].items()))
    if report is not None:
        print(report.summary())
    warning = off_warning(prov["last_bn_gamma"], args.output)
    if warning:
        print(f"siambench convert: warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
