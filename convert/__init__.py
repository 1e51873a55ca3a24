"""Pretrained checkpoints -> Detectron2 weights, verified and safe on untrusted files."""
