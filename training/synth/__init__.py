"""Synthetic training data: `python -m training.synth <kind> --out DIR ...`.

`scenes` (training.synth.scenes): detection/segmentation scenes in COCO format with class-id masks.
"""
