"""The loaded encoder: its own preprocessing, a differentiable forward, and batch-invariant encode.

Batch invariance (a sample's embedding is bitwise the same whatever its neighbours, the batch it
came in, and so the shard size) is designed in, because every later result must be identical for
any shard count:

- Every forward pass runs exactly `micro_batch` samples; a short last chunk is padded with zero
  images, so every matrix product has the same shape and the BLAS library picks the same kernels.
- Equal shapes are not enough: measured with MKL on CPU, the rows of a (7 × 1024) @ (1024 × 768)
  product change in their last bits with their position in the matrix (edge tiles are summed in
  another order), and GPU libraries promise nothing either. So a micro-batch larger than one is used
  only after a self-check at load time passes: a probe batch and the same batch rotated by one row
  must give bitwise equal rows, which shows that no position changes the result. When it fails,
  the encoder falls back to one sample per pass, which is invariant by construction.
- On CPU the default is one sample per pass: a ViT's matrix products are already large (one row
  per token), so batching gains little there, and it removes the question altogether.

Within one machine type and software stack the embeddings are then reproducible. Other GPU
models, BLAS builds or precisions round differently; `provenance()` records them for shard files.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ubsafe.encoders.identity import entry_identity, identity_cache_key
from ubsafe.encoders.registry import EncoderEntry

#: Transform from an RGB PIL image to float32 [3, S, S] in [0, 1] (no normalisation).
InputTransform = Callable[[Image.Image], torch.Tensor]


class InputConverter:
    """An encoder's image-to-input step alone (see `Encoder.to_input`); it pickles with its
    transform and without the model, for decoding in worker processes."""

    def __init__(self, key: str, image_size: int, transform: InputTransform) -> None:
        self.key = key
        self.image_size = image_size
        self.transform = transform

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        pixels = self.transform(image)
        if image.mode == "L" and pixels.ndim == 3 and pixels.shape[0] == 1:
            pixels = pixels.expand(3, -1, -1).contiguous()
        expected = (3, self.image_size, self.image_size)
        if tuple(pixels.shape) != expected or pixels.dtype != torch.float32:
            raise RuntimeError(
                f"{self.key}: its transform gave {pixels.dtype} {tuple(pixels.shape)}, "
                f"expected float32 {expected}"
            )
        return pixels


class Encoder:
    """An image encoder behind one interface, whatever library built it.

    `tower` maps normalised pixels [B, 3, S, S] to raw embeddings [B, D]; `transform` is the
    encoder's own resize and crop to [0, 1] pixels. Normalisation happens inside `forward`, so
    perturbations and attacks work on [0, 1] pixels.
    """

    def __init__(
        self,
        entry: EncoderEntry,
        tower: torch.nn.Module,
        transform: InputTransform,
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        precision: str,
        micro_batch: int,
        libraries: dict[str, str],
    ) -> None:
        self.entry = entry
        self.key = entry.key
        self.embed_dim = entry.embed_dim
        self.image_size = image_size
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.device = device
        self.precision = precision
        self.compute_dtype = _compute_dtype(precision, device)
        self._libraries = libraries
        #: `to_input` without the model: picklable, so decode worker processes can run it
        self.input_converter = InputConverter(self.key, image_size, transform)
        # bfloat16 runs the tower with bfloat16 weights (not autocast around float32 weights):
        # half the memory traffic, no casts inside the tower; pixels are normalised in bfloat16.
        self._tower = tower.to(device, dtype=self.compute_dtype).eval().requires_grad_(False)
        # Same shapes and op order as torchvision's Normalize (sub, then div).
        self._mean = torch.tensor(self.mean, device=device).view(3, 1, 1).to(self.compute_dtype)
        self._std = torch.tensor(self.std, device=device).view(3, 1, 1).to(self.compute_dtype)
        #: outcome of the position-invariance self-check (see the module notes), for provenance
        self.invariance = "not needed (one sample per pass)"
        self.micro_batch = self._checked_micro_batch(micro_batch)

    # --- identity ---

    def identity(self) -> dict[str, Any]:
        """Everything that changes the stored embeddings (see `ubsafe.encoders.identity`)."""
        return entry_identity(self.entry, self.precision)

    def cache_key(self) -> str:
        """`<key>-<8 hex of identity>`, safe as a folder name."""
        return identity_cache_key(self.identity())

    def provenance(self) -> dict[str, Any]:
        """Machine-level facts behind the bits (for shard attributes; not part of the key)."""
        device_name = (
            torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else _cpu_name()
        )
        facts: dict[str, Any] = {
            "device": self.device.type,
            "device_name": device_name,
            "compute_dtype": str(self.compute_dtype).removeprefix("torch."),
            "micro_batch": self.micro_batch,
            "position_invariance": self.invariance,
            **self._libraries,
        }
        if self.device.type == "cuda":
            facts["cuda"] = torch.version.cuda or ""
            facts["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        return facts

    # --- preprocessing ---

    def to_input(self, image: Image.Image) -> torch.Tensor:
        """The encoder's own resize and centre crop: float32 [3, S, S] in [0, 1], not normalised.

        A greyscale "L" image is resized as it is and made RGB after the crop: resampling treats
        channels alike, so the pixels equal those of converting first, at a quarter of the memory
        for a huge image (see `ubsafe.data.images`).
        """
        return self.input_converter(image)

    def to_inputs(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """`to_input` of each image, stacked into [B, 3, S, S]."""
        if not images:
            return torch.empty(0, 3, self.image_size, self.image_size)
        return torch.stack([self.to_input(image) for image in images])

    # --- model ---

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw embeddings [B, D] of [0, 1] pixels [B, 3, S, S]; differentiable w.r.t. `pixels`.

        Runs the same micro-batches and precision as `encode`, so an attack sees the model whose
        embeddings are stored; with gradients on, torch skips its fused inference attention, so
        the two agree to rounding, not to the bit. The result is float32 on `self.device`.
        """
        self._check_pixels(pixels)
        parts = [self._run(chunk)[:count] for chunk, count in self._chunks(pixels)]
        if not parts:
            return torch.empty(0, self.embed_dim, device=self.device)
        return torch.cat(parts).float()

    __call__ = forward

    def encode(self, pixels: torch.Tensor) -> np.ndarray:
        """Raw embeddings as float32 numpy [B, D], batch-invariant (see the module notes)."""
        self._check_pixels(pixels)
        with torch.inference_mode():
            # Results stay on the device until the end: one copy back, no sync per micro-batch.
            parts = [self._run(chunk)[:count].float() for chunk, count in self._chunks(pixels)]
            if not parts:
                return np.empty((0, self.embed_dim), dtype=np.float32)
            return torch.cat(parts).cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """`encode(to_inputs(images))`."""
        return self.encode(self.to_inputs(images))

    # --- internals ---

    def _run(self, chunk: torch.Tensor) -> torch.Tensor:
        chunk = chunk.to(self.device, non_blocking=True).to(self.compute_dtype)
        normalised = (chunk - self._mean) / self._std
        return self._tower(normalised)

    def _chunks(self, pixels: torch.Tensor) -> Iterator[tuple[torch.Tensor, int]]:
        """Fixed-size chunks of `micro_batch` rows, the last padded with zero images."""
        size = self.micro_batch
        for start in range(0, pixels.shape[0], size):
            chunk = pixels[start : start + size]
            count = chunk.shape[0]
            if count < size:
                pad = chunk.new_zeros((size - count, *chunk.shape[1:]))
                chunk = torch.cat([chunk, pad])
            yield chunk, count

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        expected = (3, self.image_size, self.image_size)
        if (
            pixels.ndim != 4
            or tuple(pixels.shape[1:]) != expected
            or not pixels.is_floating_point()
        ):
            raise ValueError(
                f"{self.key}: pixels must be a float tensor [B, {', '.join(map(str, expected))}] "
                f"in [0, 1] (from Encoder.to_input), got {pixels.dtype} {tuple(pixels.shape)}"
            )

    def _checked_micro_batch(self, micro_batch: int) -> int:
        if micro_batch < 1:
            raise ValueError(f"{self.key}: micro_batch must be at least 1, got {micro_batch}")
        if micro_batch == 1:
            return micro_batch
        if self.position_invariant(micro_batch):
            self.invariance = f"passed at micro-batch {micro_batch}"
            return micro_batch
        self.invariance = f"failed at micro-batch {micro_batch}: one sample per pass"
        warnings.warn(
            f"{self.key}: on this {self.device.type} the embedding of a sample changes with its "
            f"row in a batch of {micro_batch} (BLAS edge tiles); encoding one sample per pass "
            "so that results do not depend on batch or shard layout",
            RuntimeWarning,
            stacklevel=4,  # the caller of load_encoder
        )
        return 1

    def position_invariant(self, micro_batch: int) -> bool:
        """Whether every row of a `micro_batch` pass gives bitwise the same result at any position.

        Runs a seeded probe batch and the same batch rotated by one row; equal rows at shifted
        positions for every sample show that the kernels treat all positions alike.
        """
        generator = torch.Generator().manual_seed(20240503)
        size = self.image_size
        probe = torch.rand(micro_batch, 3, size, size, generator=generator)
        with torch.inference_mode():
            plain = self._run(probe).float().cpu()
            rotated = self._run(probe.roll(1, dims=0)).float().cpu().roll(-1, dims=0)
        return bool(torch.equal(plain, rotated))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "float32" or (precision == "auto" and device.type != "cuda"):
        return torch.float32
    return torch.bfloat16


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` → `cuda` when a GPU is visible, else `cpu`; anything else as torch reads it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"device {device!r} is not a torch device ({exc}); use auto, cpu or cuda"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was asked for but no CUDA GPU is visible; use auto or cpu"
        )
    return resolved
