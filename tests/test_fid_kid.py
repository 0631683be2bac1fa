"""FID and KID of generated images: the FID Inception network loads a state dict in the published
key layout, the Fréchet distance and KID match independent computations, identical generators
have FID ≈ 0, and without the weights fidelity.csv keeps its note."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ubsafe.fidelity import FID_NOTE, fidelity_table, frechet_distance, kernel_mmd2, kid


def _published_layout_state(seed: int = 0):
    """A random state dict with exactly the keys and shapes of pytorch-fid's published file:
    torchvision's plain Inception3 with 1008 classes and no auxiliary head (built here from
    torchvision alone, not from ubsafe's network)."""
    import torch
    from torchvision.models.inception import Inception3

    torch.manual_seed(seed)
    net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    state = net.state_dict()
    for key, value in state.items():
        if key.endswith("conv.weight"):  # variance-preserving, so pool3 features are O(1)
            state[key] = torch.randn_like(value) * (2 / value[0].numel()) ** 0.5
        elif key.endswith("running_var"):
            state[key] = torch.rand_like(value) + 0.5
        elif value.is_floating_point():
            state[key] = value + 0.01 * torch.randn_like(value)
    return state


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    import torch

    from ubsafe.inception import WEIGHTS

    root = tmp_path_factory.mktemp("weights")
    path = WEIGHTS.local_path(root)
    path.parent.mkdir(parents=True)
    torch.save(_published_layout_state(), path)
    return root


def test_published_layout_loads_and_gives_pool3_features(weights_dir) -> None:
    from PIL import Image

    from ubsafe.inception import WEIGHTS, features, load_network

    net = load_network(WEIGHTS.local_path(weights_dir))  # strict: every key, nothing extra
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for s in (64, 80)]
    feats = features(net, images)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])
    assert WEIGHTS.url.startswith("https://github.com/mseitzer/pytorch-fid/releases/")
    assert WEIGHTS.local_path(weights_dir).parts[-4:-2] == ("url", "mseitzer")


def test_fid_equals_an_eigenvalue_computation() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((60, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((50, 6)) * 1.5 + 0.3
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a.T), np.cov(b.T)
    # Tr((Ca Cb)^½) = Σ √λ(Ca Cb): the product of two SPD matrices has real non-negative eigenvalues
    trace_root = np.sqrt(np.clip(np.linalg.eigvals(ca @ cb).real, 0, None)).sum()
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(ca) + np.trace(cb) - 2 * trace_root
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_kid_equals_a_direct_computation() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((12, 4)), rng.standard_normal((12, 4)) + 0.5

    def k(x, y):
        return (float(x @ y) / 4 + 1) ** 3

    m = len(a)
    within = sum(k(a[i], a[j]) + k(b[i], b[j]) for i in range(m) for j in range(m) if i != j)
    cross = sum(k(a[i], b[j]) for i in range(m) for j in range(m))
    direct = within / (m * (m - 1)) - 2 * cross / m**2
    assert kernel_mmd2(a, b) == pytest.approx(direct, rel=1e-10)
    # subsets of the whole set are the whole set, whatever the draw
    assert kid(a, b, seed=5, subsets=3, subset_size=100) == pytest.approx(direct, rel=1e-10)
    # subsets: the mean over draws of kernel_mmd2 on the drawn rows
    draw = np.random.default_rng(9)
    picks = [
        (draw.choice(12, 5, replace=False), draw.choice(12, 5, replace=False)) for _ in range(4)
    ]
    expected = np.mean([kernel_mmd2(a[i], b[j]) for i, j in picks])
    assert kid(a, b, seed=9, subsets=4, subset_size=5) == pytest.approx(expected, rel=1e-12)


def _image_run(root, weights, copies: dict[str, str]):
    """A run whose plan points at PNG files in the run: generator → the generator whose images
    it copies (itself: its own random images)."""
    from PIL import Image

    from ubsafe.config import RunConfig
    from ubsafe.rundir import Run

    config = RunConfig(encoder="tiny", out=str(root), seed=3, weights_dir=str(weights))
    run = Run(root, config)
    run.results_dir.mkdir(parents=True)
    (root / "img").mkdir()
    rows, plan = [], []
    for g, (name, source) in enumerate(copies.items()):
        for p in range(4):
            sample_id = f"{name}:p{p}:0"
            seed = list(copies).index(source) * 100 + p
            pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "img" / f"{g}-{p}.png")
            plan.append((sample_id, f"img/{g}-{p}.png"))
            rows.append((sample_id, name, f"p{p}", 0, p, [], "i2p", f"prompt {p}"))
    generated = pd.DataFrame(
        rows,
        columns=[
            "sample_id",
            "generator",
            "prompt_id",
            "image_index",
            "seed",
            "categories",
            "judge",
            "prompt",
        ],
    )
    table = pa.table(
        {
            "sample_id": [s for s, _ in plan],
            "shard": [0] * len(plan),
            "file": [f for _, f in plan],
            "row": [-1] * len(plan),
        }
    )
    table = table.replace_schema_metadata(
        {b"ubsafe.n_shards": b"1", b"ubsafe.fingerprint": b"x", b"ubsafe.images": b"run"}
    )
    pq.write_table(table, run.plan_path)
    return run, generated


def test_identical_generators_have_fid_near_zero(tmp_path, weights_dir) -> None:
    from ubsafe.fidelity import image_features
    from ubsafe.inception import WEIGHTS, load_network

    run, generated = _image_run(
        tmp_path / "run", weights_dir, {"sd-1.4": "sd-1.4", "copy": "sd-1.4"}
    )
    frame = fidelity_table(run, generated).set_index("generator")
    assert np.isnan(frame.loc["sd-1.4", "fid"]) and np.isnan(frame.loc["sd-1.4", "kid"])
    base = generated[generated["generator"] == "sd-1.4"]["sample_id"].tolist()
    feats = image_features(run, base, load_network(WEIGHTS.local_path(weights_dir)))
    spread = np.trace(np.cov(np.stack(list(feats.values())), rowvar=False))
    assert spread > 1e-3  # the features differ between images: FID ≈ 0 below is not trivial
    assert abs(frame.loc["copy", "fid"]) < 1e-4 * spread  # sqrtm of a singular 2048² product
    # KID's unbiased estimate of identical sets is the full-set MMD² (negative: no self-pairs)
    full = np.stack(list(feats.values()))
    assert frame.loc["copy", "kid"] == pytest.approx(kernel_mmd2(full, full), rel=1e-9)
    assert frame["note"].str.contains("FID/KID against sd-1.4").all()
    assert not frame["note"].str.contains(FID_NOTE, regex=False).any()


def test_without_weights_fid_is_a_note(tmp_path) -> None:
    run, generated = _image_run(tmp_path / "run", tmp_path / "empty", {"sd-1.4": "sd-1.4"})
    frame = fidelity_table(run, generated)
    assert frame["fid"].isna().all() and frame["kid"].isna().all()
    assert frame["note"].str.contains(FID_NOTE, regex=False).all()
