"""The embed stage: HDF5 = direct encoder calls, shard-size invariance, difficult images, kills."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import write_unsafebench
from PIL import Image

from ubsafe.data.images import decode_image

TINY = "tiny"


def run_embed(
    cli, data: Path, out: Path, shard_size: int, *extra: str, classifiers: str = "probe-all"
):
    return cli(
        "run",
        "embed",
        data,
        "--out",
        out,
        "--shard-size",
        str(shard_size),
        "--encoder",
        TINY,
        "--classifiers",
        classifiers,
        *extra,
    )


def stored(run_dir: Path) -> dict[str, np.ndarray]:
    from ubsafe import embeddings as store
    from ubsafe.rundir import Run
    from ubsafe.stages.embed import cache_key

    run = Run.load(run_dir)
    ids, matrix = store.load_all(run, cache_key(run, TINY), "clean")
    return dict(zip(ids, matrix, strict=True))


def test_embeddings_equal_direct_encoder_calls_and_ignore_shard_size(
    demo_dir: Path, tmp_path: Path, cli
) -> None:
    import open_clip
    import torch

    from ubsafe.data.dataset import open_dataset

    per_size = {}
    for size in (1, 7, 64):
        # the CPU product against open_clip's own CPU route (a GPU run rounds in bfloat16)
        result = run_embed(cli, demo_dir, tmp_path / f"s{size}", size, "--device", "cpu")
        assert result.exit_code == 0, result.output
        per_size[size] = stored(tmp_path / f"s{size}")
    assert len(list((tmp_path / "s7").rglob("shard-*.h5"))) == 19  # 132 samples / 7
    for size in (7, 64):
        assert per_size[size].keys() == per_size[1].keys()
        for sid, vector in per_size[1].items():
            assert np.array_equal(per_size[size][sid], vector), (size, sid)

    # open_clip's own route on the same weights: a checkpoint file, create_model_and_transforms,
    # its preprocess and encode_image, on the decoded images
    from safetensors.torch import save_file

    from ubsafe.encoders import get_entry
    from ubsafe.encoders.deterministic import deterministic_state_dict

    open_clip.add_model_config(Path(get_entry(TINY).model_config_path or ""))
    skeleton = open_clip.create_model("ubsafe-tiny")
    checkpoint = tmp_path / "tiny.safetensors"
    save_file(deterministic_state_dict(skeleton.state_dict(), "tiny"), str(checkpoint))
    model, _, preprocess = open_clip.create_model_and_transforms(
        "ubsafe-tiny", pretrained=str(checkpoint)
    )
    model.eval()
    ds = open_dataset(demo_dir)
    some = ds.table.sample(12, random_state=0)
    for sid, data, _ in ds.iter_images(some):
        pixels = preprocess(decode_image(data)).unsqueeze(0)
        with torch.no_grad():
            direct = model.encode_image(pixels).numpy()[0]
        np.testing.assert_allclose(per_size[1][sid], direct, atol=1e-5, rtol=0)


def difficult_images() -> dict[str, bytes]:
    def encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kw)
        return buffer.getvalue()

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    sixteen = Image.fromarray((rng.integers(0, 65535, (40, 40))).astype(np.uint16))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    rgba = rgb.copy()
    rgba.putalpha(100)
    frames = [rgb, rgb.rotate(90)]
    from test_images import png_claiming

    good_jpeg = encode(rgb, "JPEG")
    return {
        "broken-corrupt-jpeg": good_jpeg[:30] + b"\x00" * 100,
        "broken-truncated-png": encode(rgb, "PNG")[:-80],
        "broken-zero-bytes": b"",
        "broken-text-as-jpg": b"not an image at all",
        "broken-bomb-png": png_claiming(30000, 30000),
        "ok-16bit-png": encode(sixteen, "PNG"),
        "ok-cmyk-jpeg": encode(rgb.convert("CMYK"), "JPEG"),
        "ok-palette-transparency": encode(palette, "PNG", transparency=0),
        "ok-rgba": encode(rgba, "PNG"),
        "ok-animated-gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "ok-plain-jpeg": good_jpeg,
    }


def test_difficult_images_are_skipped_or_converted(tmp_path: Path, cli) -> None:
    from ubsafe import embeddings as store
    from ubsafe.rundir import Run
    from ubsafe.stages.embed import cache_key

    images = difficult_images()
    rows = [
        {
            "safety_label": "Safe",
            "category": "Hate",
            "source": "Laion5B",
            "image": {"bytes": data, "path": name},
        }
        for name, data in images.items()
    ]
    data = write_unsafebench(tmp_path / "hard", {"test": rows})
    result = run_embed(
        cli, data, tmp_path / "run", 64, classifiers="nudenet"
    )  # no train split here
    assert result.exit_code == 0, result.output
    run = Run.load(tmp_path / "run")
    part = store.read_shard(run, cache_key(run, TINY), "clean", 0)
    names = list(images)
    skipped = {names[int(sid.split("-")[1])]: reason for sid, reason in part.skipped}
    embedded = {names[int(sid.split("-")[1])] for sid in part.sample_ids}
    assert set(skipped) == {n for n in names if n.startswith("broken")}
    assert embedded == {n for n in names if n.startswith("ok")}
    assert skipped["broken-zero-bytes"].startswith("empty")
    assert skipped["broken-text-as-jpg"].startswith("not-an-image")
    assert (
        skipped["broken-bomb-png"].startswith("too-large")
        and "30000x30000" in skipped["broken-bomb-png"]
    )
    assert np.isfinite(part.embeddings).all()


def test_second_run_encodes_nothing(demo_dir: Path, tmp_path: Path, cli) -> None:
    cache = tmp_path / "cache"
    first = run_embed(cli, demo_dir, tmp_path / "a", 50, "--cache-dir", str(cache))
    assert first.exit_code == 0
    files = sorted(cache.rglob("*.h5"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = run_embed(cli, demo_dir, tmp_path / "a", 50, "--cache-dir", str(cache))
    other = run_embed(
        cli, demo_dir, tmp_path / "b", 50, "--cache-dir", str(cache)
    )  # another run, same cache
    assert again.exit_code == 0 and other.exit_code == 0
    assert sorted(cache.rglob("*.h5")) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert (
        "already done" in again.output
        or "already in the cache" in again.output
        or again.exit_code == 0
    )
    assert not list((tmp_path / "b" / "logs" / "embed").glob("*.log"))  # no shard of run b ran


def embed_cmd(data: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ubsafe",
        "run",
        "embed",
        str(data),
        "--out",
        str(out),
        "--shard-size",
        "66",
        "--encoder",
        TINY,
        "--classifiers",
        "probe-all",
    ]


def starts(out: Path, shard: int) -> int:
    return (
        (out / "logs" / "embed" / f"shard-{shard:05d}.log")
        .read_text(encoding="utf-8")
        .count(" starts ")
    )


KILLED_WRITER = """
import sys
import numpy as np
from ubsafe import embeddings as store
from ubsafe.rundir import Run
from ubsafe.stages.embed import cache_key
run = Run.load(sys.argv[1])
key = cache_key(run, "tiny")
want = store.expected(run, key, "clean", 1)
ids = [f"x{i}" for i in range(want.n_rows)]
big = np.ones((want.n_rows, 20_000), np.float32)  # a few MB: the embeddings part of the file
path = store.shard_file(run, key, "clean", 1)
store.write_shard(path, want, ids, big, [], dtype="float32", identity={})
"""


def paused_env(name: str, marker: Path) -> dict[str, str]:
    """An environment whose writer of `name` stops half-way through its temp file (embeddings
    written, ids and attributes not) and creates `marker`: a kill lands at a known point."""
    from ubsafe.atomic import PAUSE_ENV

    return {**os.environ, "UBSAFE_PROGRESS": "0", PAUSE_ENV: f"{name}:{marker}"}


def kill_when_paused(proc: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, "the writer ended without reaching the pause point"
        assert time.monotonic() < deadline, "the writer never reached the pause point"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_during_a_shard_write_leaves_no_complete_file(
    demo_dir: Path, tmp_path: Path
) -> None:
    """kill -9 while shard 1's HDF5 file is being written: the partial file stays under its temp
    name, never passes the completeness check, and the relaunch redoes only that shard."""
    from ubsafe.rundir import Run
    from ubsafe.stages import STAGES

    out = tmp_path / "run"
    env = {**os.environ, "UBSAFE_PROGRESS": "0"}
    subprocess.run(embed_cmd(demo_dir, out), env=env, check=True, capture_output=True)
    reference = stored(out)
    final = next(out.rglob("shard-00001.h5"))
    final.unlink()

    marker = tmp_path / "paused"
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(out)], env=paused_env(final.name, marker)
    )
    kill_when_paused(writer, marker)
    partial = list(final.parent.glob(".ubsafe-tmp-*shard-00001.h5"))
    assert len(partial) == 1 and partial[0].stat().st_size > 1 << 20  # the embeddings are in it
    assert not final.exists()
    run = Run.load(out)
    assert STAGES["embed"].missing(run) == [1]  # the partial file does not count

    subprocess.run(embed_cmd(demo_dir, out), env=env, check=True, capture_output=True)
    assert STAGES["embed"].missing(run) == []
    again = stored(out)
    assert again.keys() == reference.keys()
    assert all(np.array_equal(again[k], reference[k]) for k in reference)
    assert starts(out, 0) == 1 and starts(out, 1) == 2  # shard 0 was never redone


def test_kill_9_mid_run_loses_nothing(demo_dir: Path, tmp_path: Path) -> None:
    """kill -9 of a whole run while it writes its second shard: the first stays done and correct,
    the second is redone, and the end result equals an uninterrupted run."""
    from ubsafe.rundir import Run
    from ubsafe.stages import STAGES

    env = {**os.environ, "UBSAFE_PROGRESS": "0"}
    clean_out = tmp_path / "clean"
    subprocess.run(embed_cmd(demo_dir, clean_out), env=env, check=True, capture_output=True)
    expected = stored(clean_out)

    out = tmp_path / "run"
    marker = tmp_path / "paused"
    proc = subprocess.Popen(
        embed_cmd(demo_dir, out),
        env=paused_env("shard-00001.h5", marker),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_when_paused(proc, marker)
    run = Run.load(out)
    assert [s for s in range(run.n_shards) if STAGES["embed"].is_done(run, s)] == [0]
    assert list(out.rglob(".ubsafe-tmp-*shard-00001.h5")), "killed inside shard 1's write"
    subprocess.run(embed_cmd(demo_dir, out), env=env, check=True, capture_output=True)
    final = stored(out)
    assert final.keys() == expected.keys()
    assert all(np.array_equal(final[k], expected[k]) for k in expected)
    assert starts(out, 0) == 1 and starts(out, 1) == 2
