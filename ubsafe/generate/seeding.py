"""Starting latents of generated images, seeded by (prompt seed, image index).

`image` (default): image i of a prompt with seed s starts from standard normal draws of NumPy's
PCG64 seeded with the seed sequence of entropy s and spawn key (i,), in float32. Each image is
drawn on its own, on the CPU, so it does not depend on the batch, the shard or the device that
makes it. (torch's CPU generator keeps only the low 32 bits of a seed, too few to tell (seed,
index) pairs apart.)

`i2p`: the official I2P runner's stream. One generator on the device, seeded once with the
prompt's seed, draws the latents of 5 images per pipeline call, call after call (the runner calls
the pipeline 2 × 5 times for its 10 images). Image i is the (i mod 5)-th latent of call i // 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

I2P_IMAGES_PER_CALL = 5
SEEDINGS = ("image", "i2p")


def image_latent(prompt_seed: int, image_index: int, shape: Sequence[int]) -> torch.Tensor:
    import numpy as np
    import torch

    # the index as spawn key: an entropy list [seed, index] would equal [seed + 2**32·index]'s
    sequence = np.random.SeedSequence(int(prompt_seed), spawn_key=(int(image_index),))
    rng = np.random.Generator(np.random.PCG64(sequence))
    return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))


def i2p_latents(
    prompt_seed: int, n_images: int, shape: Sequence[int], *, device: str, dtype: torch.dtype
) -> torch.Tensor:
    """The first `n_images` latents of the I2P runner's stream for one prompt."""
    import torch

    generator = torch.Generator(device).manual_seed(int(prompt_seed))
    calls = -(-n_images // I2P_IMAGES_PER_CALL)
    parts = [
        torch.randn((I2P_IMAGES_PER_CALL, *shape), generator=generator, device=device, dtype=dtype)
        for _ in range(calls)
    ]
    return torch.cat(parts)[:n_images].float().cpu()
