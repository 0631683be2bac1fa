"""Spatter's water mask as batched tensor ops: OpenCV's bytes, on any device, with no per-image
step (the GPU path), checked against OpenCV's own chain on the CPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ubsafe.perturb import _water, get_perturbation, perturbation_seed, weather
from ubsafe.perturb._filters import gaussian_filter


def liquid_layers(count: int, size: int, severity: int, seed: int) -> torch.Tensor:
    """Spatter's thresholded liquid layers, drawn as ImageNet-C draws them."""
    loc, scale, sigma, threshold, _, _ = weather.SPATTER[severity - 1]
    normal = torch.from_numpy(np.random.default_rng(seed).standard_normal((count, 1, size, size)))
    liquid = gaussian_filter(loc + normal * scale, float(sigma), 4.0, "nearest")
    return torch.where(liquid < threshold, 0.0, liquid)


def seeds_for(count: int, severity: int) -> list[int]:
    return [perturbation_seed(0, f"img{i}", "spatter", severity) for i in range(count)]


#: OpenCV's IPP build (x86-64 wheels) adds float32 chamfer weights, as the tensor path does; its
#: plain C++ code uses fixed point and may differ in a rare level.
needs_ipp = pytest.mark.skipif(not cv2.ipp.useIPP(), reason="OpenCV without IPP: another chamfer")
pytestmark = needs_ipp


def opencv_mask(liquid: torch.Tensor, intensity: float) -> torch.Tensor:
    assert weather._opencv() is not None
    return weather.water_mask(liquid, intensity)  # the CPU path: OpenCV image by image


@pytest.mark.parametrize("severity", [1, 2, 3])
@pytest.mark.parametrize("size", [17, 64, 160])
def test_the_tensor_mask_is_opencvs_bytes(severity: int, size: int) -> None:
    intensity = weather.SPATTER[severity - 1][4]
    liquid = liquid_layers(6, size, severity, seed=size * 10 + severity)
    expected = opencv_mask(liquid, intensity)
    got = _water.water_mask(liquid, intensity)
    assert got.dtype == torch.float32 and got.shape == liquid.shape
    assert torch.equal(got, expected)
    assert (expected > 0).any()  # there were drops to draw


def test_a_layer_without_drops_and_a_flat_layer_match_too() -> None:
    for value in (0.0, 0.9):
        liquid = torch.full((2, 1, 24, 24), value, dtype=torch.float64)
        assert torch.equal(_water.water_mask(liquid, 0.6), opencv_mask(liquid, 0.6))


def test_canny_equals_opencv_on_noise_steps_and_ramps() -> None:
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (4, 40, 40), dtype=np.uint8)
    steps = np.zeros((1, 40, 40), dtype=np.uint8)
    steps[0, 10:30, 5:25] = 200
    steps[0, :, 33:] = 90
    ramp = np.tile(np.arange(40, dtype=np.uint8)[None, :] * 6, (40, 1))[None]
    diagonal = np.fromfunction(lambda i, j: ((i + j) % 12 < 6) * 255, (40, 40)).astype(np.uint8)
    for batch in (noise, steps, ramp, diagonal[None]):
        expected = np.stack([cv2.Canny(image, 50, 150) > 0 for image in batch])
        got = _water.canny(torch.from_numpy(batch.astype(np.int32))).numpy()
        assert np.array_equal(got, expected)


def test_spatter_without_opencv_gives_the_same_images_and_is_batch_invariant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spatter = get_perturbation("spatter")
    images = torch.rand(5, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    seeds = seeds_for(5, 2)
    with_opencv = spatter.apply(images, 2, seeds)
    monkeypatch.setattr(weather, "_opencv", lambda: None)
    batched = spatter.apply(images, 2, seeds)
    alone = spatter.apply(images[3:4], 2, seeds[3:4])
    assert torch.equal(batched, with_opencv)
    assert torch.equal(alone[0], batched[3])
    assert not torch.equal(batched, images)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("severity", [1, 2, 3])
def test_spatter_on_cuda_is_the_cpu_result_bitwise(severity: int) -> None:
    intensity = weather.SPATTER[severity - 1][4]
    liquid = liquid_layers(16, 96, severity, seed=severity)
    on_gpu = weather.water_mask(liquid.to("cuda"), intensity)
    assert on_gpu.is_cuda
    assert torch.equal(on_gpu.cpu(), opencv_mask(liquid, intensity))
    spatter = get_perturbation("spatter")
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(severity))
    seeds = seeds_for(8, severity)
    cpu = spatter.apply(images, severity, seeds)
    gpu = spatter.apply(images.to("cuda"), severity, seeds)
    # the liquid layer is blurred on the device, so a value at a rounding edge may move a level
    # (as for every perturbation: test_perturb_properties); the mask itself is bitwise, above
    assert (gpu.cpu() - cpu).abs().mean() < 1e-3
