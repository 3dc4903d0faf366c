"""Transfer learning from an exported detector: copy an ONNX file's convolutions into a PyTorch
``Detector``, so a user holding only ``models/synthetic/detector.onnx`` can start a new detector (a
face detector, their own classes) from its backbone and neck.

The export folds each batch norm into the convolution before it, so a copied convolution gets the
folded weights and bias, and its batch norm becomes the identity (mean 0, variance 1 - eps,
scale 1) carrying the bias: the layer computes exactly what the file computes. Convolutions are
matched in execution order, and only where the shapes agree (a head with other classes is left
as initialised).

The same copy starts a segmenter's MobileNetV2 contracting path (``training.segment.model``) from the
detector's backbone: ``load_onnx_weights(unet.encoder, path, example, input_norm=...)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.detect.model import NORM_MEAN, NORM_STD


def _execution_order(model: nn.Module, example: torch.Tensor) -> list[nn.Conv2d]:
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
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


def _renormalize(weight: np.ndarray, bias: np.ndarray, mean: tuple, std: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The detector's first convolution, which reads ``(x / 255 - NORM_MEAN) / NORM_STD``, rewritten for
    a model that reads ``(x / 255 - mean) / std``: the same response away from the zero-padded border."""
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    m_file, s_file = np.asarray(NORM_MEAN, np.float32), np.asarray(NORM_STD, np.float32)
    scale, shift = s / s_file, (m - m_file) / s_file   # the file's input = ours * scale + shift
    return weight * scale[None, :, None, None], bias + (weight * shift[None, :, None, None]).sum(axis=(1, 2, 3))


@torch.no_grad()
def load_onnx_weights(model: nn.Module, path: Path, example: torch.Tensor | None = None,
                      input_norm: tuple[tuple, tuple] | None = None) -> tuple[int, int]:
    """Copy what fits; returns (convolutions copied, convolutions in ``model``). ``example`` is an
    input ``model`` runs on (default: a ``Detector``'s own input size); ``input_norm`` the model's
    ``(mean, std)`` of ``x / 255`` when they are not the detector's."""
    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    source = [(tensors[n.input[1]], tensors[n.input[2]] if len(n.input) > 2 else None)
              for n in graph.node if n.op_type == "Conv" and n.input[1] in tensors]
    if example is None:
        example = torch.zeros(1, 3, model.cfg.input_size, model.cfg.input_size)
    convs, bns = _execution_order(model, example), _batch_norm_after(model)
    copied = 0
    for k, (conv, (weight, bias)) in enumerate(zip(convs, source)):
        if tuple(conv.weight.shape) != weight.shape:
            continue
        bias = bias if bias is not None else np.zeros(weight.shape[0], np.float32)
        if k == 0 and input_norm is not None:
            weight, bias = _renormalize(weight, bias, *input_norm)
        copy_folded(conv, bns, weight, bias)
        copied += 1
    return copied, len(convs)


@torch.no_grad()
def copy_folded(conv: nn.Conv2d, bns: dict[nn.Conv2d, nn.BatchNorm2d], weight: np.ndarray, bias: np.ndarray) -> None:
    """A file's (folded) convolution into ``conv``; its batch norm re-opened as the identity carrying
    the bias, so that eval mode computes ``conv(x) + bias`` as the file does."""
    conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight, np.float32)))
    b = torch.from_numpy(np.ascontiguousarray(bias, np.float32))
    if conv in bns:
        bn = bns[conv]
        bn.weight.fill_(1.0)
        bn.bias.copy_(b)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
    elif conv.bias is not None:
        conv.bias.copy_(b)
