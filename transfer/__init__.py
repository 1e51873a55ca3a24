"""Detectron2 transfer benchmarks (VOC, COCO) with the SimSiam/MoCo protocol.

Kept import-light: ``transfer/install_d2.py`` (run by ``make setup``) must run before detectron2 exists.
Modules that need detectron2 import ``siambench.transfer.d2compat`` first.
"""
