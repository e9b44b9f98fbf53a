"""The CNN: a compact batch-normalised network for 28x28 greyscale digits.

Five 3x3 conv-BN-ReLU blocks (two of them strided, so no max-pooling), global average pooling and
one linear layer: about 0.15M parameters and 11M multiply-adds per image; in ``channels_last``
layout it trains about twice as fast per epoch as the classic pytorch/examples MNIST CNN on a
2-core CPU, which is what makes a 99.5% run fit in minutes. Depends on torch and the package's
constants only.
"""

from __future__ import annotations

import torch
from torch import nn

from . import dtype_name

NUM_CLASSES = 10

# (in_channels, out_channels, stride) of each conv block; the architecture is data, so the logged
# model records it and the served model rebuilds exactly this network from its weights.
DEFAULT_BLOCKS: tuple[tuple[int, int, int], ...] = (
    (1, 32, 1),
    (32, 32, 2),
    (32, 64, 1),
    (64, 64, 2),
    (64, 128, 1),
)


def _conv_block(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    return [
        # No bias: the BatchNorm that follows has its own shift.
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DigitNet(nn.Module):
    """``[N, 1, 28, 28]`` normalised images -> ``[N, 10]`` logits."""

    def __init__(self, blocks: tuple[tuple[int, int, int], ...] = DEFAULT_BLOCKS) -> None:
        super().__init__()
        self.blocks = tuple(tuple(b) for b in blocks)
        layers: list[nn.Module] = []
        for in_channels, out_channels, stride in self.blocks:
            layers += _conv_block(in_channels, out_channels, stride)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.blocks[-1][1], NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(x)

    def architecture(self) -> dict:
        """What ``build_network`` needs to rebuild this network (JSON-serialisable)."""
        return {"blocks": [list(b) for b in self.blocks]}


def fused_for_inference(model: DigitNet) -> nn.Module:
    """An eval-only copy with each BatchNorm folded into the conv before it, its weights in
    ``channels_last`` layout (as in training).

    Same outputs (to float rounding), one layer fewer per block; ``channels_last`` weights make
    the convolutions take oneDNN's NHWC kernels whatever the input's layout (a one-channel image
    is the same bytes either way). ``make bench`` measures both against the module as trained
    (section network: "eager module as trained"). TorchScript freezing is deprecated in this torch;
    ``torch.compile`` would add tens of seconds to every backend's cold start.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = model.eval()
    layers: list[nn.Module] = []
    modules = list(model.features)
    for i in range(0, len(modules), 3):
        conv, bn, relu = modules[i : i + 3]
        layers += [fuse_conv_bn_eval(conv, bn), relu]
    fused = nn.Sequential(nn.Sequential(*layers), model.pool, nn.Flatten(1), model.classifier)
    return fused.eval().to(memory_format=torch.channels_last)


DTYPE_CHOICES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def inference_dtype(choice: str | None, device: torch.device) -> torch.dtype:
    """The dtype the served network computes in, from ``DTYPE_ENV``'s value: ``float32`` when
    unset or empty; ``bfloat16``; ``auto``, bfloat16 where ``device`` multiplies in it natively
    (a CPU with AMX or AVX-512 BF16, as oneDNN reports it; a GPU that supports it), else float32.

    bfloat16 keeps float32's range with an 8-bit mantissa: on the full model's 2,000 first MNIST
    test digits the labels were the same and confidences moved by at most 0.015. Where the device
    lacks the instructions, bfloat16 is emulated and slower than float32, hence ``auto``.
    Raises ``ValueError`` naming the accepted values for anything else."""
    name = dtype_name(choice)
    if name == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        else:
            supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
            native = torch.backends.mkldnn.is_available() and supported()
        return torch.bfloat16 if native else torch.float32
    return DTYPE_CHOICES[name]


def build_network(architecture: dict | None = None) -> DigitNet:
    """Rebuild a network from ``DigitNet.architecture()``; the default network when ``None``."""
    if not architecture:
        return DigitNet()
    return DigitNet(tuple(tuple(int(v) for v in block) for block in architecture["blocks"]))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
