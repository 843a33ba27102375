"""BDRP (Base Data Region Proposal): the Faster R-CNN face detector of DA-FSL, stage 1.

Library use (the augmenter and classifier crop faces with it)::

    from dafsl.detector import load_detector, detect
    model = load_detector(ctx.stage_output("detector")["checkpoint"], device)
    faces = detect(model, images, device, score_threshold=0.5)  # [{"boxes", "scores"}]
"""
from dafsl.detector.model import backbone_state, build_detector, load_detector
from dafsl.detector.predict import detect

__all__ = ["build_detector", "load_detector", "backbone_state", "detect"]
