"""The Inception network of FID and KID: pool3 features (2048-d) of images.

The weights are the ones FID papers use: the TensorFlow Inception graph of the original FID code
(2015-12-05), converted to a PyTorch state dict and published with pytorch-fid
(`pt_inception-2015-12-05-6726825d.pth`, a GitHub release asset, not a Hugging Face file). Its
keys are torchvision's `Inception3` names (1008 classes, no auxiliary head). That graph differs
from torchvision's ImageNet Inception in its pooling: the average pools of the A, C and first E
blocks leave the padding out of the mean, and the last E block max-pools its pool branch. ubsafe
builds that network from torchvision's convolution blocks with those forwards, loads the state
dict with `torch.load(weights_only=True)` and `strict=True`.

Images are taken as 8-bit RGB, resized to 299 × 299 (bilinear, as FID does), scaled to [-1, 1];
the feature is the global average of the last block's output.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ubsafe.weights import WeightFile

if TYPE_CHECKING:
    import torch
    from PIL import Image

FEATURE_DIM = 2048
SIZE = 299
WEIGHTS = WeightFile(
    "mseitzer/pytorch-fid",
    "pt_inception-2015-12-05-6726825d.pth",
    revision="fid_weights",
    source_url=(
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth"
    ),
)


def weight_files() -> tuple[WeightFile, ...]:
    return (WEIGHTS,)


def build_network() -> Any:
    """The FID Inception network with untrained weights (load a state dict into it)."""
    import torch
    import torch.nn.functional as F
    from torchvision.models import inception as tv

    def pool_excluding_pad(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    def pool_max(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)

    class BlockA(tv.InceptionA):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            wide = self.branch5x5_2(self.branch5x5_1(x))
            deep = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            pooled = self.branch_pool(pool_excluding_pad(x))
            return torch.cat([self.branch1x1(x), wide, deep, pooled], 1)

    class BlockC(tv.InceptionC):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            double = x
            for layer in (
                self.branch7x7dbl_1,
                self.branch7x7dbl_2,
                self.branch7x7dbl_3,
                self.branch7x7dbl_4,
                self.branch7x7dbl_5,
            ):
                double = layer(double)
            pooled = self.branch_pool(pool_excluding_pad(x))
            return torch.cat([self.branch1x1(x), single, double, pooled], 1)

    class BlockE(tv.InceptionE):
        pool = staticmethod(pool_excluding_pad)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mid = self.branch3x3_1(x)
            split = torch.cat([self.branch3x3_2a(mid), self.branch3x3_2b(mid)], 1)
            deep = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            split_deep = torch.cat([self.branch3x3dbl_3a(deep), self.branch3x3dbl_3b(deep)], 1)
            pooled = self.branch_pool(type(self).pool(x))
            return torch.cat([self.branch1x1(x), split, split_deep, pooled], 1)

    class BlockELast(BlockE):
        pool = staticmethod(pool_max)

    net = tv.Inception3(
        num_classes=1008,
        aux_logits=False,
        init_weights=False,
        inception_blocks=[
            tv.BasicConv2d,
            BlockA,
            tv.InceptionB,
            BlockC,
            tv.InceptionD,
            BlockE,
            tv.InceptionAux,
        ],
    )
    net.Mixed_7c = BlockELast(2048)
    return net.eval()


def load_network(path: str | os.PathLike[str]) -> Any:
    """The FID Inception network with the state dict at `path` (tensors only, every key)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    net = build_network()
    net.load_state_dict(state, strict=True)
    return net.eval()


def pool3(net: Any, batch: torch.Tensor) -> torch.Tensor:
    """Pool3 features of a float batch (N, 3, H, W) in [0, 1]."""
    import torch.nn.functional as F

    x = F.interpolate(batch, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    for name in (
        "Conv2d_1a_3x3",
        "Conv2d_2a_3x3",
        "Conv2d_2b_3x3",
        "maxpool1",
        "Conv2d_3b_1x1",
        "Conv2d_4a_3x3",
        "maxpool2",
        "Mixed_5b",
        "Mixed_5c",
        "Mixed_5d",
        "Mixed_6a",
        "Mixed_6b",
        "Mixed_6c",
        "Mixed_6d",
        "Mixed_6e",
        "Mixed_7a",
        "Mixed_7b",
        "Mixed_7c",
    ):
        x = getattr(net, name)(x)
    return x.mean(dim=(2, 3))


def features(net: Any, images: list[Image.Image], *, batch_size: int = 16) -> np.ndarray:
    """(N, 2048) float64 pool3 features of RGB images, in order."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = net.to(device)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            # images of different sizes are resized one by one to 299 × 299 (the same bilinear map)
            rows = []
            for image in chunk:
                array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
                tensor = torch.from_numpy(array).permute(2, 0, 1)[None].to(device)
                rows.append(pool3(net, tensor))
            out.append(torch.cat(rows).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))
