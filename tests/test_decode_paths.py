"""The two decode paths of the embed stage: the GPU path's skips, pixels and batch invariance.

Without CUDA the GPU path runs on the CPU (torchvision's libjpeg decode, tensor resize): that is
its fallback, and it must skip exactly what the CPU path skips. The same checks run on CUDA
under the `gpu` marker.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from test_embed_stage import difficult_images
from test_encoders_support import sample_images
from test_images import grey_sources

from ubsafe.data.images import decode_image
from ubsafe.encoders import load_encoder
from ubsafe.stages import common, decode_gpu

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


def jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def corpus() -> dict[str, bytes]:
    """The embed stage's difficult images, plus JPEGs that must leave the batch decoder."""
    images = difficult_images()
    photo = sample_images(1, seed=3)[0].resize((160, 120))
    good = jpeg(photo)
    corrupt = bytearray(good)
    for k in range(600, 2000, 37):
        corrupt[k] = 0xFF if corrupt[k] != 0xFF else 0
    exif = photo.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    images.update(
        {
            "ok-progressive-jpeg": jpeg(photo, progressive=True),
            "ok-grey-jpeg": jpeg(photo.convert("L")),
            "ok-rotated-jpeg": jpeg(photo, exif=exif),
            "ok-photo-jpeg": good,
            "broken-scan-jpeg": bytes(corrupt),
            "broken-no-end-jpeg": good[: len(good) // 2],
        }
    )
    return images


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> object:
    return load_encoder("tiny", tmp_path_factory.mktemp("w"), device="cpu")


def entries(images: dict[str, bytes]) -> list[tuple[str, bytes | None, str]]:
    return [(name, data, "") for name, data in images.items()]


def cpu_path(encoder: object, images: dict[str, bytes]) -> list[tuple[str, object, str]]:
    return [common._decode_one(e, encoder.to_input) for e in entries(images)]  # type: ignore[attr-defined]


def gpu_path(
    encoder: object, images: dict[str, bytes], device: str, group: int = decode_gpu.GROUP
) -> list[tuple[str, object, str]]:
    return list(decode_gpu.iter_inputs(entries(images), encoder, device, group=group))


@pytest.mark.parametrize("device", DEVICES)
def test_gpu_path_skips_what_the_cpu_path_skips(tiny: object, device: str) -> None:
    images = corpus()
    cpu = cpu_path(tiny, images)
    gpu = gpu_path(tiny, images, device)
    assert [sid for sid, _, _ in gpu] == list(images)
    skipped_cpu = {sid: reason for sid, pixels, reason in cpu if pixels is None}
    skipped_gpu = {sid: reason for sid, pixels, reason in gpu if pixels is None}
    assert skipped_gpu == skipped_cpu
    assert set(skipped_cpu) == {name for name in images if name.startswith("broken-")}


def test_only_complete_baseline_jpegs_go_to_the_batch_decoder() -> None:
    images = corpus()
    chosen = {name for name, data in images.items() if decode_gpu.batch_decodable(data)}
    # corrupt scan data cannot be seen from the header: the decoders' refusal sends it back to PIL
    assert chosen == {"ok-plain-jpeg", "ok-grey-jpeg", "ok-photo-jpeg", "broken-scan-jpeg"}


@pytest.mark.parametrize("device", DEVICES)
def test_gpu_path_pixels_follow_the_encoders_transform(tiny: object, device: str) -> None:
    images = {f"p{i}": jpeg(image) for i, image in enumerate(sample_images(12, seed=5))}
    cpu = cpu_path(tiny, images)
    gpu = gpu_path(tiny, images, device)
    for (_, want, _), (_, got, _) in zip(cpu, gpu, strict=True):
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        assert got.device.type == device and got.shape == want.shape  # type: ignore[union-attr]
        diff = (got.cpu() - want).abs()  # type: ignore[operator]
        # another resampler (and on CUDA another IDCT): close, not equal
        assert float(diff.mean()) < 0.02 and float(diff.max()) < 0.5


@pytest.mark.parametrize("device", DEVICES)
def test_gpu_path_pixels_do_not_depend_on_the_group(tiny: object, device: str) -> None:
    images = corpus()
    images.update({f"p{i}": jpeg(im) for i, im in enumerate(sample_images(70, seed=7))})
    runs = {group: gpu_path(tiny, images, device, group=group) for group in (1, 7, 64)}
    for group in (7, 64):
        for (sid, a, ra), (sid2, b, rb) in zip(runs[1], runs[group], strict=True):
            assert sid == sid2 and ra == rb
            if a is None:
                assert b is None
            else:
                assert torch.equal(a, b), (group, sid)  # type: ignore[arg-type]


@pytest.mark.parametrize("device", DEVICES)
def test_embeddings_on_the_gpu_path_are_batch_invariant(tiny: object, device: str) -> None:
    encoder = tiny if device == "cpu" else load_encoder("tiny", ".", device=device)
    images = {f"p{i}": jpeg(im) for i, im in enumerate(sample_images(64, seed=9))}
    inputs = [p for _, p, _ in gpu_path(encoder, images, device)]
    full = np.concatenate(
        [encoder.encode(torch.stack(inputs[i : i + 64])) for i in range(0, 64, 64)]  # type: ignore[attr-defined]
    )
    for size in (1, 7):
        parts = [
            encoder.encode(torch.stack(inputs[i : i + size]))  # type: ignore[attr-defined]
            for i in range(0, len(inputs), size)
        ]
        assert np.array_equal(np.concatenate(parts), full), size


def test_the_decode_path_is_part_of_the_cache_key() -> None:
    from ubsafe.stages.embed import cache_key

    def run(device: str) -> object:
        return SimpleNamespace(config=SimpleNamespace(device=device, precision="auto"))

    assert cache_key(run("cpu"), "tiny") == cache_key(run("auto"), "tiny")  # type: ignore[arg-type]
    assert cache_key(run("cuda"), "tiny") != cache_key(run("cpu"), "tiny")  # type: ignore[arg-type]
    assert cache_key(run("cuda:1"), "tiny") == cache_key(run("cuda"), "tiny")  # type: ignore[arg-type]
    assert decode_gpu.provenance("gpu", "cuda")["jpeg_decoder"] == "nvjpeg"
    assert decode_gpu.provenance("cpu", "cpu")["decode"] == "cpu"


def test_gpu_path_keeps_other_encoders_own_transform(tmp_path: Path) -> None:
    # transformers' image processor is not a tensor resize: the path decodes, then uses it
    entry = SimpleNamespace(preprocess=SimpleNamespace(pipeline="clip_image_processor_pil"))
    assert decode_gpu.TensorResize.of(SimpleNamespace(entry=entry, image_size=224)) is None


def test_greyscale_reaches_the_encoder_as_its_rgb_copy_would(tiny: object) -> None:
    # the embed stage keeps a greyscale image one channel until after the resize (a quarter of
    # the memory of a huge scan): the encoder input must be the very pixels of converting first
    for name, data in grey_sources().items():
        _, ours, reason = common._decode_one((name, data, ""), tiny.to_input, grey=True)  # type: ignore[attr-defined]
        assert reason == ""
        expected = tiny.to_input(decode_image(data))  # type: ignore[attr-defined]
        assert ours.shape == expected.shape and torch.equal(ours, expected), name


def test_both_paths_read_files_under_the_runs_limits(tmp_path: Path, cli, tiny: object) -> None:
    from ubsafe.rundir import Run

    data = tmp_path / "data"
    data.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)
    Image.fromarray(noise).save(data / "big.png")  # about 2.4 MB
    (data / "small.jpg").write_bytes(jpeg(sample_images(1, seed=5)[0]))
    manifest = data / "manifest.csv"
    manifest.write_text(
        "path,label,category,source,split\n"
        "big.png,Safe,Hate,Laion5B,test\nsmall.jpg,Unsafe,Hate,Lexica,test\n"
    )
    run_dir = tmp_path / "run"
    result = cli("plan", manifest, "--out", run_dir, "--encoder", "tiny", "--max-image-mb", "1")
    assert result.exit_code == 0, result.output
    run = Run.load(run_dir)
    outcomes = {}
    for path in ("cpu", "gpu"):
        items = list(common.iter_inputs(run, run.plan, tiny, path=path))
        outcomes[path] = [(sample_id, reason) for sample_id, _, reason in items]
    assert outcomes["gpu"] == outcomes["cpu"]
    reasons = [reason for _, reason in outcomes["cpu"]]
    assert sorted(bool(r) for r in reasons) == [False, True]
    assert any(r.startswith("too-large: the image file is") for r in reasons), reasons


@pytest.mark.parametrize("workers", [1, 3])
def test_decoding_in_processes_gives_the_threads_pixels_and_skips(
    tiny: object, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    images = corpus()
    monkeypatch.setattr(common, "image_bytes", lambda run, rows: iter(entries(images)))
    run = SimpleNamespace(config=SimpleNamespace(decode_workers=workers))
    convert = tiny.input_converter  # type: ignore[attr-defined]
    inline = list(common.iter_decoded(run, None, convert, workers=0, grey=True))  # type: ignore[arg-type]
    assert sum(1 for _, item, _ in inline if item is None) >= 3  # the corpus has skips
    try:
        for pool in ("threads", "processes", "processes"):  # the second time: the same workers
            got = list(common.iter_decoded(run, None, convert, grey=True, pool=pool))  # type: ignore[arg-type]
            assert [(i, r) for i, _, r in got] == [(i, r) for i, _, r in inline], pool
            for (_, ours, _), (_, theirs, _) in zip(got, inline, strict=True):
                assert (ours is None and theirs is None) or torch.equal(ours, theirs), pool
                # by value, not through shared memory (a file descriptor per image)
                assert ours is None or not ours.is_shared()
        assert len(common._PROCESS_POOL) == 1
    finally:
        common.shutdown_decode_pools()
    assert not common._PROCESS_POOL


def test_a_converter_that_cannot_be_pickled_decodes_in_threads(
    tiny: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    images = corpus()
    monkeypatch.setattr(common, "image_bytes", lambda run, rows: iter(entries(images)))
    run = SimpleNamespace(config=SimpleNamespace(decode_workers=2))
    convert = tiny.input_converter  # type: ignore[attr-defined]
    unpicklable = lambda image: convert(image)  # noqa: E731
    got = list(common.iter_decoded(run, None, unpicklable, pool="processes"))  # type: ignore[arg-type]
    assert len(got) == len(images)
    assert "cannot be pickled" in caplog.text
