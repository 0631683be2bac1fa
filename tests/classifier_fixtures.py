"""Weight files in the classifiers' real formats, with random values, and reference helpers.

Each writer puts the file where `ubsafe weights fetch` would (`DIR/hf/<repo>/<filename>`), in the
format the released file has, so the tests go through the real loaders.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

#: The five LAION columns autokeras treated as categorical, and the statistics it stored for them.
NSFW_CATEGORICAL_COLUMNS = (180, 316, 413, 440, 644)
NSFW_CATEGORICAL_MEANS = (1188.1, 328.4, 362.1, 371.3, 388.2)
NSFW_CATEGORICAL_VARIANCES = (2.0e6, 9.2e4, 8.7e4, 8.9e4, 9.4e4)

MULTIHEADED_HEADS = ("sexual", "violent", "disturbing", "hateful", "political")


def hub_path(weights_dir: Path, repo: str, filename: str) -> Path:
    path = Path(weights_dir) / "hf" / repo / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def prompt_pickle_bytes(prompts: np.ndarray) -> bytes:
    """Pickle protocol 3 of a float16 array, naming numpy 1.x's module as the released file does."""
    data = pickle.dumps(np.asarray(prompts, dtype=np.float16), protocol=3)
    # GLOBAL opcodes are newline-terminated text, so the module name can be swapped in place.
    return data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def write_q16(weights_dir: Path, prompts: np.ndarray) -> Path:
    path = hub_path(weights_dir, "yiting/Q16", "prompts.p")
    path.write_bytes(prompt_pickle_bytes(prompts))
    return path


def random_multiheaded_states(
    rng: np.random.Generator, dim: int = 768, hidden: int = 384
) -> dict[str, OrderedDict[str, torch.Tensor]]:
    """Five head state dicts: the released key names, random weights and BatchNorm statistics."""
    states = {}
    for index, name in enumerate(MULTIHEADED_HEADS):
        bound0, bound4 = 1 / np.sqrt(dim), 1 / np.sqrt(hidden)

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        states[name] = OrderedDict(
            [
                ("0.weight", t(rng.uniform(-bound0, bound0, (hidden, dim)))),
                ("0.bias", t(rng.uniform(-bound0, bound0, hidden))),
                ("3.weight", t(rng.uniform(0.5, 1.5, hidden))),
                ("3.bias", t(rng.normal(0, 0.1, hidden))),
                ("3.running_mean", t(rng.uniform(0.0, 0.3, hidden))),
                ("3.running_var", t(rng.uniform(0.01, 0.1, hidden))),
                ("3.num_batches_tracked", torch.tensor(112 + index, dtype=torch.int64)),
                ("4.weight", t(rng.uniform(-bound4, bound4, (1, hidden)))),
                ("4.bias", t(rng.uniform(-bound4, bound4, 1))),
            ]
        )
    return states


def write_multiheaded(weights_dir: Path, states: dict[str, OrderedDict[str, torch.Tensor]]) -> None:
    for name, state in states.items():
        # The released heads are pickle protocol 2 torch zips of an OrderedDict.
        torch.save(
            state, hub_path(weights_dir, "yiting/MultiHeaded", f"{name}.pt"), pickle_protocol=2
        )


def random_nsfw_state(rng: np.random.Generator, dim: int = 768) -> OrderedDict[str, torch.Tensor]:
    """The PyTorch port's state dict: Keras-like Normalization statistics, then the MLP."""
    mean = rng.normal(0.0, 0.01, dim)
    variance = rng.uniform(0.5, 2.0, dim) / dim
    for column, m, v in zip(
        NSFW_CATEGORICAL_COLUMNS, NSFW_CATEGORICAL_MEANS, NSFW_CATEGORICAL_VARIANCES, strict=True
    ):
        mean[column], variance[column] = m, v
    state: OrderedDict[str, torch.Tensor] = OrderedDict(
        [
            ("norm.mean", torch.from_numpy(mean.astype(np.float32))),
            ("norm.variance", torch.from_numpy(variance.astype(np.float32))),
        ]
    )
    widths = (dim, 64, 512, 256, 1)
    for k in range(4):
        fan_in, fan_out = widths[k], widths[k + 1]
        bound = 1 / np.sqrt(fan_in)
        weight = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
        state[f"linear_{k + 1}.weight"] = torch.from_numpy(weight)
        state[f"linear_{k + 1}.bias"] = torch.from_numpy(
            rng.uniform(-bound, bound, fan_out).astype(np.float32)
        )
    return state


def write_nsfw(weights_dir: Path, state: OrderedDict[str, torch.Tensor]) -> Path:
    path = hub_path(weights_dir, "yiting/NSFWDetector", "clip_autokeras_binary_nsfw.pth")
    torch.save(state, path)
    return path


def old_checker_layout(state: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Keys as in the released checkpoint (transformers 4.x: vision_model.vision_model.*)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        if key.startswith("vision_model.") and not key.startswith("vision_model.vision_model."):
            key = "vision_model." + key
        out[key] = value.detach().clone()
    return out


def write_sd_checker_bin(weights_dir: Path, state: dict[str, torch.Tensor]) -> Path:
    path = hub_path(weights_dir, "CompVis/stable-diffusion-safety-checker", "pytorch_model.bin")
    torch.save(old_checker_layout(state), path)
    return path


def bisect_margin(
    margin: Callable[[np.ndarray], float], a: np.ndarray, b: np.ndarray, target: float
) -> np.ndarray:
    """A point on the segment a–b whose `margin` is within float64 bisection error of `target`.

    `margin(a) - target` and `margin(b) - target` must have opposite signs.
    """
    f_a = margin(a) - target
    if np.sign(f_a) == np.sign(margin(b) - target):
        raise ValueError("the segment's ends lie on the same side of the target")
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.sign(margin(a + mid * (b - a)) - target) == np.sign(f_a):
            lo = mid
        else:
            hi = mid
    return a + lo * (b - a)
