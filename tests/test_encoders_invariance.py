"""Batch invariance: a sample's embedding is bitwise the same whatever shares its batch or shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_encoders_support import (  # noqa: F401 (one_thread is a fixture)
    MID_CONFIG,
    one_thread,
    sample_images,
    write_open_clip_entry,
)

from ubsafe.encoders import get_entry, load_encoder
from ubsafe.encoders.encoder import Encoder

N = 64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mid(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    key, weights_dir, _ = write_open_clip_entry(
        tmp_path_factory.mktemp("mid"), "ubsafe-test-mid-invariance", MID_CONFIG, quick_gelu=True
    )
    return key, weights_dir


def by_shards(encoder: Encoder, pixels: torch.Tensor, shard_size: int) -> np.ndarray:
    """Encode consecutive shards of `shard_size` rows separately, as the embed stage does."""
    parts = [encoder.encode(pixels[i : i + shard_size]) for i in range(0, len(pixels), shard_size)]
    return np.concatenate(parts)


def assert_invariant(encoder: Encoder) -> None:
    pixels = encoder.to_inputs(sample_images(N, seed=20))
    alone = np.concatenate([encoder.encode(pixels[i : i + 1]) for i in range(N)])
    for shard_size in (7, N):
        assert np.array_equal(by_shards(encoder, pixels, shard_size), alone), shard_size
    # Other neighbours and other positions: a permuted batch, unpermuted afterwards.
    order = torch.from_numpy(np.random.default_rng(21).permutation(N))
    shuffled = encoder.encode(pixels[order])
    assert np.array_equal(shuffled, alone[order.numpy()])


@pytest.mark.parametrize("micro_batch", [None, 8, 7])
def test_tiny_embeddings_do_not_depend_on_shard_size(
    tmp_path: Path, micro_batch: int | None
) -> None:
    encoder = load_encoder("tiny", tmp_path, device="cpu", micro_batch=micro_batch)
    assert_invariant(encoder)


@pytest.mark.parametrize("micro_batch", [None, 8, 7])
def test_mid_size_embeddings_do_not_depend_on_shard_size(
    mid: tuple[str, Path], micro_batch: int | None
) -> None:
    key, weights_dir = mid
    encoder = load_encoder(key, weights_dir, device="cpu", micro_batch=micro_batch)
    assert_invariant(encoder)


def test_thread_count_does_not_change_embeddings(mid: tuple[str, Path]) -> None:
    key, weights_dir = mid
    encoder = load_encoder(key, weights_dir, device="cpu")
    pixels = encoder.to_inputs(sample_images(6, seed=24))
    one = encoder.encode(pixels)
    torch.set_num_threads(2)
    assert np.array_equal(encoder.encode(pixels), one)


def test_plain_batching_changes_the_last_bits_here(mid: tuple[str, Path]) -> None:
    # Without fixed micro-batches the same model gives other bits in a batch of 7 than alone,
    # so the invariance above is earned, not automatic.
    key, weights_dir = mid
    encoder = load_encoder(key, weights_dir, device="cpu")
    pixels = encoder.to_inputs(sample_images(7, seed=22))
    mean = torch.tensor(encoder.mean).view(3, 1, 1)
    std = torch.tensor(encoder.std).view(3, 1, 1)
    with torch.inference_mode():
        batched = encoder._tower((pixels - mean) / std).numpy()
    alone = encoder.encode(pixels)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)
    if np.array_equal(batched, alone):
        pytest.skip("this BLAS happens to be batch-invariant for these shapes")


class PositionDependent(torch.nn.Module):
    """A tower whose rows pick up their index in the batch, as uneven BLAS edge tiles can."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        rows = pixels.flatten(1)[:, :4]
        return rows + 1e-3 * torch.arange(len(rows), dtype=rows.dtype)[:, None]


class RowWise(torch.nn.Module):
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.flatten(1)[:, :4] * 2.0


def synthetic_encoder(tower: torch.nn.Module, micro_batch: int) -> Encoder:
    entry = get_entry("tiny").model_copy(update={"embed_dim": 4})
    return Encoder(
        entry,
        tower,
        lambda image: torch.zeros(3, 64, 64),
        image_size=64,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        device=torch.device("cpu"),
        precision="auto",
        micro_batch=micro_batch,
        libraries={},
    )


def test_self_check_falls_back_to_one_sample_per_pass_when_position_matters() -> None:
    with pytest.warns(RuntimeWarning, match="changes with its row in a batch of 8"):
        encoder = synthetic_encoder(PositionDependent(), micro_batch=8)
    assert encoder.micro_batch == 1
    pixels = torch.rand(10, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(encoder.encode(pixels[3:9])[2], encoder.encode(pixels[5:6])[0])


def test_self_check_keeps_the_micro_batch_when_rows_are_independent() -> None:
    encoder = synthetic_encoder(RowWise(), micro_batch=8)
    assert encoder.micro_batch == 8
    pixels = torch.rand(10, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    expected = ((pixels - 0.5) / 0.25).flatten(1)[:, :4] * 2.0
    np.testing.assert_array_equal(encoder.encode(pixels), expected.numpy())


def test_forward_matches_encode_and_gives_per_sample_gradients(tmp_path: Path) -> None:
    encoder = load_encoder("tiny", tmp_path, device="cpu")
    pixels = encoder.to_inputs(sample_images(5, seed=23)).requires_grad_(True)
    embeddings = encoder.forward(pixels)
    assert embeddings.shape == (5, encoder.embed_dim) and embeddings.dtype == torch.float32
    # Equal up to rounding: with gradients on, torch skips its fused inference attention kernel.
    np.testing.assert_allclose(
        embeddings.detach().numpy(), encoder.encode(pixels.detach()), rtol=0, atol=1e-5
    )
    embeddings[2].square().sum().backward()
    grad = pixels.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[2].abs().sum() > 0
    assert grad[[0, 1, 3, 4]].abs().sum() == 0  # no sample leaks into another's gradient


def test_pixels_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    encoder = load_encoder("tiny", tmp_path, device="cpu")
    with pytest.raises(ValueError, match=r"pixels must be a float tensor \[B, 3, 64, 64\]"):
        encoder.encode(torch.zeros(2, 3, 224, 224))
    assert encoder.encode(torch.zeros(0, 3, 64, 64)).shape == (0, 64)
