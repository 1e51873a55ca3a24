"""Pretrained checkpoints -> Detectron2 weights, verified and safe on untrusted files.

* :mod:`siambench.convert.checkpoints` -- read a checkpoint safely, pull out its ResNet encoder
  (``load_backbone_state_dict``), detect its format;
* :mod:`siambench.convert.naming` -- torchvision -> Detectron2 ResNet names;
* :mod:`siambench.convert.export` -- write the ``.pkl`` with provenance (``convert_checkpoint``);
* :mod:`siambench.convert.verify` -- feature equivalence and key coverage inside Detectron2;
* :mod:`siambench.convert.safe_pickle` -- restricted unpickler, ``.pkl`` weights as detectron2 reads them;
* :mod:`siambench.convert.cli` -- ``siambench convert``.

Importing ``convert`` (or any module but ``verify``) does not import detectron2.
"""
from .errors import ConversionError, UnsafeCheckpointError, VerificationError

__all__ = ["ConversionError", "UnsafeCheckpointError", "VerificationError"]
