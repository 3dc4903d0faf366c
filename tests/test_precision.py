"""Mixed-precision training: bfloat16 autocast on the trunk only, float32 heads, float32 export graph."""

import pytest
import torch

from training.faces.embedder import EmbedderConfig, EmbedNet
from training.faces.landmarks import LandmarkConfig, LandmarkNet
from training.precision import native_bf16, resolve


def test_resolve():
    assert resolve("fp32") == "fp32" and resolve("bf16") == "bf16"
    assert resolve("auto") == ("bf16" if native_bf16() else "fp32")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve("fp16")


@pytest.mark.parametrize("make", [lambda: EmbedNet(EmbedderConfig(width=16)), lambda: LandmarkNet(LandmarkConfig())])
def test_bf16_trunk_keeps_float32_outputs_close_to_float32(make):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        full, mixed = model(x), model(x, "bf16")
    assert mixed.dtype == torch.float32 and full.shape == mixed.shape
    assert (mixed - full).abs().max() < 0.05            # bfloat16 keeps 8 bits of mantissa
    assert not torch.equal(mixed, full)                  # the trunk really ran in bfloat16
    with torch.no_grad():
        assert torch.equal(model(x), full)               # the default (exported) path is float32
