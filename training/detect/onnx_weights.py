"""Transfer learning from an exported detector: copy an ONNX file's convolutions into a PyTorch
``Detector``, so a user holding only ``models/detector.onnx`` can start a new detector (a face
detector, their own classes) from its backbone and neck.

The export folds each batch norm into the convolution before it, so a copied convolution gets the
folded weights and bias, and its batch norm becomes the identity (mean 0, variance 1 - eps,
scale 1) carrying the bias: the layer computes exactly what the file computes. Convolutions are
matched in execution order, and only where the shapes agree (a head with other classes is left
as initialised).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.detect.model import Detector


def _execution_order(model: Detector) -> list[nn.Conv2d]:
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, model.cfg.input_size, model.cfg.input_size))
    finally:
        for h in hooks:
            h.remove()
    return order


def _batch_norm_after(model: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    pairs = {}
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            children = list(seq.children())
            for a, b in zip(children, children[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    pairs[a] = b
    return pairs


@torch.no_grad()
def load_onnx_weights(model: Detector, path: Path) -> tuple[int, int]:
    """Copy what fits; returns (convolutions copied, convolutions in ``model``)."""
    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    source = [(tensors[n.input[1]], tensors[n.input[2]] if len(n.input) > 2 else None)
              for n in graph.node if n.op_type == "Conv" and n.input[1] in tensors]
    convs, bns = _execution_order(model), _batch_norm_after(model)
    copied = 0
    for conv, (weight, bias) in zip(convs, source):
        if tuple(conv.weight.shape) != weight.shape:
            continue
        conv.weight.copy_(torch.tensor(weight))
        b = torch.tensor(bias) if bias is not None else torch.zeros(weight.shape[0])
        if conv in bns:
            bn = bns[conv]
            bn.weight.fill_(1.0)
            bn.bias.copy_(b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        elif conv.bias is not None:
            conv.bias.copy_(b)
        copied += 1
    return copied, len(convs)
