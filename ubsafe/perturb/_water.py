"""ImageNet-C's water-drop mask as batched tensor ops, equal to its OpenCV chain.

The chain is `Canny(50, 150)`, `distanceTransform(L2, 5)` truncated at 20, `blur(3x3)` to 8 bits,
`equalizeHist`, an emboss `filter2D` and a second `blur(3x3)`. Each step is integer arithmetic,
or float arithmetic done in OpenCV's order, so the tensor version gives OpenCV's bytes, not an
approximation (`tests/test_perturb_water.py` holds it to that). It runs the whole batch at once on
any device: the GPU path of spatter has no per-image CPU step. The sequential parts of OpenCV's
algorithms are replaced by equivalent parallel ones:

- hysteresis (a stack walk over 8-connected candidates) is repeated 3x3 dilation inside the
  candidates until nothing changes;
- the two-pass 5x5 chamfer scan is relaxation with the forward half of the mask, then with the
  backward half (see `_truncated_chamfer`: the same paths, added in the same float32 order).
  Every step weighs at least 1 and the result is truncated at 20, so 20 rounds per half give
  every value below 20 exactly and the rest at least 20.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_LOW, _HIGH = 50, 150  # Canny thresholds (integers; OpenCV floors them)
_SHIFT = 15
_TG22 = int(0.4142135623730950488016887242097 * (1 << _SHIFT) + 0.5)  # tan(22.5 deg), fixed point
# OpenCV's 5x5 L2 chamfer weights (1, 1.4, 2.1969) as float32, added in float32: what its IPP build
# (the PyPI wheels for x86-64) computes. Its plain C++ code rounds them to 16-bit fixed point
# instead, so builds without IPP differ in a rare level (`weather._opencv` then uses this path).
_HV, _DIAG, _LONG = (float(torch.tensor(v, dtype=torch.float32)) for v in (1.0, 1.4, 2.1969))
# A step (dy, dx) and its weight; forward steps go to a later pixel in raster order.
_FORWARD = tuple(
    (dy, dx, _HV if abs(dy) + abs(dx) == 1 else _DIAG if abs(dy) == abs(dx) == 1 else _LONG)
    for dy in range(0, 3)
    for dx in range(-2, 3)
    if (abs(dy), abs(dx)) in {(0, 1), (1, 0), (1, 1), (1, 2), (2, 1)} and (dy, dx) > (0, 0)
)
_BACKWARD = tuple((-dy, -dx, weight) for dy, dx, weight in _FORWARD)
_TRUNC = 20
_EMBOSS = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))
_BOX = ((1, 1, 1), (1, 1, 1), (1, 1, 1))
_FAR = float(1 << 30)


def water_mask(liquid: torch.Tensor, intensity: float) -> torch.Tensor:
    """The mask for a batch of liquid layers (B, 1, S, S) in [0, 1]: float32, same shape/device."""
    layer = torch.floor((liquid[:, 0].to(torch.float64) * 255.0).clamp(0.0, 255.0))
    pixels = layer.to(torch.int32)
    edges = canny(pixels)
    dist = _truncated_chamfer(edges).to(torch.float64)  # at most 20
    dist = torch.floor(_box3(dist).to(torch.float32)).to(torch.int32)  # blur(float32) -> uint8
    dist = _equalize(dist)
    dist = _correlate3(dist, _EMBOSS).clamp(0, 255)
    dist = torch.floor(_box3(dist.to(torch.float64)) + 0.5).to(torch.float32)  # blur(uint8)
    mask = pixels.to(torch.float32) * dist
    peak = mask.amax(dim=(1, 2), keepdim=True)
    scaled = mask / peak * torch.tensor(intensity, dtype=torch.float32, device=mask.device)
    return torch.where(peak > 0, scaled, mask)[:, None]


def canny(pixels: torch.Tensor) -> torch.Tensor:
    """`cv2.Canny(pixels, 50, 150)` (3x3 Sobel, L1 magnitude) of int32 (B, H, W) in [0, 255]."""
    p = F.pad(pixels[:, None].to(torch.float32), (1, 1, 1, 1), mode="replicate")[:, 0]
    p = p.to(torch.int32)
    h, w = pixels.shape[-2:]

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (at(-1, 1) - at(-1, -1)) + 2 * (at(0, 1) - at(0, -1)) + (at(1, 1) - at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    mag = gx.abs() + gy.abs()
    padded = F.pad(mag, (1, 1, 1, 1))  # zero magnitude outside the image

    def mag_at(dy: int, dx: int) -> torch.Tensor:
        return padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    x = gx.abs()
    y = gy.abs() << _SHIFT
    tg22x = x * _TG22
    tg67x = tg22x + (x << (_SHIFT + 1))
    horizontal = (mag > mag_at(0, -1)) & (mag >= mag_at(0, 1))
    vertical = (mag > mag_at(-1, 0)) & (mag >= mag_at(1, 0))
    # Diagonal: against the neighbours along the gradient; its sign picks the diagonal.
    same_sign = (gx ^ gy) >= 0
    diag_same = (mag > mag_at(-1, -1)) & (mag > mag_at(1, 1))
    diag_other = (mag > mag_at(-1, 1)) & (mag > mag_at(1, -1))
    diagonal = torch.where(same_sign, diag_same, diag_other)
    maximum = torch.where(y < tg22x, horizontal, torch.where(y > tg67x, vertical, diagonal))
    candidate = (mag > _LOW) & maximum
    edge = candidate & (mag > _HIGH)
    return _hysteresis(edge, candidate)


def _hysteresis(edge: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Grow `edge` through 8-connected `candidate` pixels until it stops changing."""
    inside = candidate.to(torch.float32)[:, None]
    grown = edge.to(torch.float32)[:, None]
    while True:
        before = grown
        for _ in range(8):  # a few steps per check: one host sync per 8 pixels of growth
            grown = F.max_pool2d(grown, 3, stride=1, padding=1) * inside
        if torch.equal(grown, before):
            return grown[:, 0] > 0


def _truncated_chamfer(edges: torch.Tensor) -> torch.Tensor:
    """`min(distanceTransform(255 - edges, DIST_L2, 5), 20)` as float32 (B, H, W).

    OpenCV adds float32 weights along each path, so equal-length paths taken in another order
    can round apart. Its forward scan finds the best path made of forward steps, and its backward
    scan the best continuation made of backward steps; relaxing with the forward half-mask, then
    with the backward one, finds the same paths and adds along them in the same order.
    """
    dist = torch.where(edges, 0.0, _FAR).to(torch.float32)
    for half in (_FORWARD, _BACKWARD):
        dist = _relax(dist, half)
    return dist.clamp(max=float(_TRUNC))


def _relax(dist: torch.Tensor, offsets: tuple[tuple[int, int, float], ...]) -> torch.Tensor:
    h, w = dist.shape[-2:]
    for _ in range(_TRUNC):  # every step weighs at least 1: 20 steps reach every value below 20
        padded = F.pad(dist, (2, 2, 2, 2), value=_FAR)
        best = dist
        for dy, dx, weight in offsets:
            # the pixel at p - (dy, dx), the step's origin
            source = padded[:, 2 - dy : 2 - dy + h, 2 - dx : 2 - dx + w]
            best = torch.minimum(best, source + weight)
        dist = best
    return dist


def _reflect101(values: torch.Tensor) -> torch.Tensor:
    """Pad (B, H, W) by one pixel, OpenCV's BORDER_REFLECT_101 (torch's "reflect")."""
    dtype = values.dtype
    work = values if dtype.is_floating_point else values.to(torch.float64)
    # a 1-pixel side reflects onto itself (OpenCV), which is what replicate gives
    mode = "reflect" if min(values.shape[-2:]) > 1 else "replicate"
    padded = F.pad(work[:, None], (1, 1, 1, 1), mode=mode)[:, 0]
    return padded if dtype.is_floating_point else padded.to(dtype)


def _box3(values: torch.Tensor) -> torch.Tensor:
    """The normalised 3x3 box filter (float64 in and out): exact sums, then one multiply by 1/9."""
    return _correlate3(values, _BOX) * (1.0 / 9.0)


def _correlate3(values: torch.Tensor, kernel: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """3x3 correlation with REFLECT_101 borders, in the input's dtype, taps added in row order."""
    h, w = values.shape[-2:]
    padded = _reflect101(values)
    total = torch.zeros_like(values)
    for dy, row in enumerate(kernel):
        for dx, weight in enumerate(row):
            if weight:
                total = total + weight * padded[:, dy : dy + h, dx : dx + w]
    return total


def _equalize(values: torch.Tensor) -> torch.Tensor:
    """`cv2.equalizeHist` of each image of int32 (B, H, W) in [0, 255]."""
    batch = values.shape[0]
    flat = values.reshape(batch, -1).to(torch.int64)
    total = flat.shape[1]
    hist = torch.zeros(batch, 256, dtype=torch.int64, device=values.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    levels = torch.arange(256, device=values.device)
    first = torch.where(hist > 0, levels, 256).amin(dim=1, keepdim=True)
    first_count = hist.gather(1, first)
    # OpenCV: scale = 255.f / (total - hist[first]) in float32; lut[j] = round(sum * scale).
    denominator = (total - first_count).clamp(min=1).to(torch.float32)
    scale = torch.tensor(255.0, dtype=torch.float32, device=values.device) / denominator
    running = torch.cumsum(torch.where(levels > first, hist, 0), dim=1)
    lut = torch.round(running.to(torch.float32) * scale).clamp(0, 255).to(torch.int32)
    lut = torch.where(levels > first, lut, 0)
    constant = first_count == total  # one level only: OpenCV fills the image with that level
    lut = torch.where(constant, first.to(torch.int32).expand(-1, 256), lut)
    return lut.gather(1, flat).reshape(values.shape).to(torch.int32)
