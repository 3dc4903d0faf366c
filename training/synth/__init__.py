"""Synthetic training data: `python -m training.synth <kind> --out DIR ...`.

`scenes` (training.synth.scenes): detection/segmentation scenes in COCO format with class-id masks.
`faces` (training.synth.faces): photos of synthetic people, COCO keypoints with an identity per face.
"""

from dataclasses import field


def knob(default, help_: str):
    """A generator config field; its help becomes the CLI flag's help (``add_config_flags``)."""
    return field(default=default, metadata={"help": help_})
