"""A downloaded dataset is hostile input: a corpus of attacks through `data check`, `run
effectiveness` and `report`.

Every case is refused at validation or skipped with its reason; no byte of a file outside the
dataset, nor of a non-image file inside it, reaches any output (canary strings are grepped for);
report.md and index.html carry no live markup; the terminal gets no control character; and the
whole corpus runs under 2 GB peak RSS (measured with `resource` over every command's process).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ubsafe.data.demo import write_demo

CANARY_OUTSIDE = "CANARY-OUTSIDE-5d1e9b"
CANARY_TOKEN = "hf_CANARYTOKEN0123456789abcdef"
CANARY_INSIDE = "CANARY-NONIMAGE-a7c4f2"
PASSWD = "root:x:0:0"
CANARIES = (CANARY_OUTSIDE, CANARY_TOKEN, CANARY_INSIDE, PASSWD)

ESCAPE_ID = "id-\x1b]0;owned\x07\x1b[2J\x1b[31m"
HTML_ID = "<img src=x onerror=alert(1)>"
MD_ID = "[click](javascript:alert(2)) | # head"
FORMULA_ID = '=HYPERLINK("http://evil.example","x")'
HOSTILE_SOURCE = "<script>alert(3)</script>"
RUN_NAME = "run<img src=x onerror=alert(4)>"
EXTERNAL_NAME = "set<svg onload=alert(5)>"

#: Control characters a terminal acts on (newline and tab are text).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

#: Runs the corpus's commands one after another as its children and reports their peak RSS.
MEASURE = """
import json, os, resource, subprocess, sys
results = []
for argv in json.loads(sys.argv[1]):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    results.append([proc.returncode, out.decode("utf-8", "replace"),
                    err.decode("utf-8", "replace"),
                    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss])
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"results": results, "peak_kb": peak_kb}))
"""


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    data = bytearray(png(Image.new("RGB", (4, 4))))
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = (zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(data)


def sixteen_bit_png(side: int) -> bytes:
    """A 16-bit greyscale PNG of side × side that compresses to little (a gentle ramp)."""
    ramp = np.tile((np.arange(side, dtype=np.uint32) * 5 % 65536).astype(np.uint16), (side, 1))
    return png(Image.fromarray(ramp))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{CANARY_OUTSIDE}\n{CANARY_TOKEN}\n")
    (outside / "real.png").write_bytes(png(Image.new("RGB", (16, 16), (200, 10, 10))))

    # demo-like images as files, behind a manifest
    demo = write_demo(root / "demo", n=44, seed=3)
    rows = []
    images = root / "ok" / "images"
    images.mkdir(parents=True)
    for split in ("train", "test"):
        for file in sorted((demo / "data").glob(f"{split}-*.parquet")):
            table = pq.read_table(file).to_pylist()
            for i, row in enumerate(table):
                name = f"{split}-{i:03d}.png"
                (images / name).write_bytes(row["image"]["bytes"])
                rows.append(
                    {
                        "path": f"images/{name}",
                        "label": row["safety_label"],
                        "category": row["category"],
                        "source": row["source"],
                        "split": split,
                        "sample_id": name,
                    }
                )
    ok = root / "ok"
    hostile = {
        # case: (file name, bytes, sample id)
        "text named .png": ("notes.png", f"{CANARY_INSIDE} plain text\n".encode(), FORMULA_ID),
        "HTML page": (
            "page.png",
            f"<html><script>{CANARY_INSIDE}</script></html>".encode(),
            HTML_ID,
        ),
        "PDF": ("doc.png", f"%PDF-1.4 {CANARY_INSIDE}".encode(), MD_ID),
        "truncated PNG": ("cut.png", png(Image.new("RGB", (64, 64), (1, 2, 3)))[:-40], ESCAPE_ID),
        "zero bytes": ("empty.png", b"", "empty-file"),
        "header claims 30000x30000": ("bomb.png", png_claiming(30000, 30000), "bomb"),
        "over the size limit": (
            "huge.png",
            (CANARY_INSIDE * 200_000).encode()[:2_500_000],
            "huge-file",
        ),
        "source with markup": ("src.png", b"GIF89a broken", "hostile-source"),
    }
    for _name, (file, data, sample_id) in hostile.items():
        (ok / file).write_bytes(data)
        rows.append(
            {
                "path": file,
                "label": "Unsafe",
                "category": "Sexual",
                "source": HOSTILE_SOURCE if sample_id == "hostile-source" else "Laion5B",
                "split": "test",
                "sample_id": sample_id,
            }
        )
    # a 16-bit greyscale image of 11,500 x 11,500 (a few hundred KB): decoded within bounds
    (ok / "wide.png").write_bytes(sixteen_bit_png(11_500))
    rows.append(
        {
            "path": "wide.png",
            "label": "Safe",
            "category": "Sexual",
            "source": "Lexica",
            "split": "test",
            "sample_id": "wide-16-bit",
        }
    )
    # a symlink to an image inside the dataset is fine
    (ok / "alias.png").symlink_to(images / "test-000.png")
    rows.append({**rows[-2], "path": "alias.png", "sample_id": "alias", "source": "Laion5B"})
    pd.DataFrame(rows).to_csv(ok / "manifest.csv", index=False)
    (root / "user.toml").write_text(
        'encoder = "tiny"\nclassifiers = ["probe-all"]\nbootstrap = 200\n'
        f'[source_map]\nLaion5B = "real"\nLexica = "ai"\n"{HOSTILE_SOURCE}" = "real"\n'
    )

    # paths that leave the dataset: refused at validation, each with its row
    refused = root / "refused"
    refused.mkdir()
    (refused / "inside.png").write_bytes(png(Image.new("RGB", (8, 8))))
    (refused / "link.png").symlink_to(outside / "secret.txt")
    (refused / "linked-dir").symlink_to(outside, target_is_directory=True)
    escapes = [
        "../../../../../../../../etc/passwd",
        "../outside/secret.txt",
        str(outside / "secret.txt"),
        "link.png",
        "linked-dir/secret.txt",
        "images/../../outside/real.png",
    ]
    pd.DataFrame(
        [
            {"path": p, "label": "Safe", "category": "Sexual", "source": "Laion5B"}
            for p in ["inside.png", *escapes]
        ]
    ).to_csv(refused / "manifest.csv", index=False)

    # an external evaluation set: a huge base64 image, base64 of a text file, a hostile folder name
    external = root / EXTERNAL_NAME
    (external / "data").mkdir(parents=True)
    demo_rows = [
        r for f in sorted((demo / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()
    ]
    for split, part in (("train", demo_rows[:30]), ("test", demo_rows[30:])):
        encoded = [base64.b64encode(r["image"]["bytes"]).decode() for r in part]
        labels = [1 if r["safety_label"] == "Unsafe" else 0 for r in part]
        if split == "test":
            encoded += [
                base64.b64encode(os.urandom(3_000_000)).decode(),
                base64.b64encode(f"{CANARY_INSIDE} text\n".encode()).decode(),
            ]
            labels += [1, 0]
        pq.write_table(
            pa.table({"image": pa.array(encoded, pa.string()), "label": labels}),
            external / "data" / f"{split}-00000.parquet",
            row_group_size=4,
        )
    (external / "ubsafe.toml").write_text(
        'encoder = "tiny"\nclassifiers = ["probe-all"]\nbootstrap = 200\n'
    )
    return {"ok": ok, "refused": refused, "external": external, "root": root, "outside": outside}


def ubsafe(*args: object) -> list[str]:
    return [sys.executable, "-m", "ubsafe", *(str(a) for a in args)]


@pytest.fixture(scope="module")
def outcome(corpus: dict[str, Path]) -> dict[str, object]:
    root = corpus["root"]
    ok_run = root / "runs" / RUN_NAME
    ext_run = root / "runs" / "external"
    limit = ("--max-image-mb", "1")
    user = ("--config", root / "user.toml")
    commands = [
        ubsafe("data", "check", corpus["refused"] / "manifest.csv", "--images"),
        ubsafe(
            "run",
            "effectiveness",
            corpus["refused"] / "manifest.csv",
            "--out",
            root / "r0",
            *user,
        ),
        ubsafe(
            "data", "check", corpus["refused"] / "manifest.csv", "--image-roots", corpus["outside"]
        ),
        ubsafe("data", "check", corpus["ok"] / "manifest.csv", "--images", *limit, *user),
        ubsafe(
            "run", "effectiveness", corpus["ok"] / "manifest.csv", "--out", ok_run, *limit, *user
        ),
        ubsafe("report", ok_run),
        ubsafe("data", "check", corpus["external"], "--images", *limit),
        ubsafe("run", "effectiveness", corpus["external"], "--out", ext_run, *limit),
        ubsafe("report", ext_run),
    ]
    env = {**os.environ, "UBSAFE_PROGRESS": "0", "UBSAFE_WEIGHTS": str(root / "no-weights")}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(commands)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    return {
        "results": measured["results"],
        "peak_kb": measured["peak_kb"],
        "ok_run": ok_run,
        "ext_run": ext_run,
    }


def test_paths_leaving_the_dataset_are_refused_with_row_path_and_fix(outcome, corpus) -> None:
    first, second, third = outcome["results"][:3]
    code, err = first[0], first[2]
    run_code, run_err = second[0], second[2]
    allowed_code, allowed_err = third[0], third[2]
    assert code == 1 and run_code == 1
    for line in range(3, 8):  # the escaping rows (line 2 is the image inside); 5 listed per kind
        assert f"manifest.csv:line {line}: image path" in err
    assert "and 1 more 'image-outside' problems" in err
    assert "climbs out of the dataset folder" in err and "is an absolute path" in err
    assert err.count("resolves through a symlink") == 2
    assert "image_roots" in err and "--image-roots" in err
    assert "nothing was planned" in run_err and not (corpus["root"] / "r0").exists()
    # with the outside folder allowed, only /etc/passwd stays refused
    assert (
        allowed_code == 1 and allowed_err.count("image path") == 1 and "etc/passwd" in allowed_err
    )


def test_hostile_rows_are_skipped_with_their_reason(outcome) -> None:
    code, _, err, _ = outcome["results"][3]
    assert code == 1, err  # data check --images exits 1 when images fail
    assert "settings from" in outcome["results"][6][2]  # what the external set's file chose
    run_code, _, run_err, _ = outcome["results"][4]
    assert run_code == 0, run_err
    skipped = pd.read_csv(outcome["ok_run"] / "results" / "skipped.csv", dtype=str)
    reasons = dict(zip(skipped["sample_id"], skipped["reason"], strict=True))
    assert reasons["'" + FORMULA_ID].startswith(
        "not-an-image: unrecognised signature (looks like text)"
    )
    assert reasons[HTML_ID].startswith("not-an-image") and "HTML" in reasons[HTML_ID]
    assert "PDF" in reasons[MD_ID]
    assert reasons[ESCAPE_ID].split(":")[0] in ("truncated", "corrupt")
    assert reasons["empty-file"].startswith("empty")
    assert reasons["bomb"].startswith("too-large") and "30000x30000" in reasons["bomb"]
    assert reasons["huge-file"].startswith("too-large: the image file is 2.5 MB")
    assert reasons["hostile-source"].startswith(("not-an-image", "corrupt", "truncated"))
    assert "wide-16-bit" not in reasons and "alias" not in reasons  # decoded and scored
    predictions = pd.read_parquet(outcome["ok_run"] / "results" / "predictions.parquet")
    assert {"wide-16-bit", "alias"} <= set(predictions["sample_id"])

    ext_code, _, ext_err, _ = outcome["results"][7]
    assert ext_code == 0, ext_err
    ext_skipped = pd.read_csv(outcome["ext_run"] / "results" / "skipped.csv", dtype=str)
    ext_reasons = set(ext_skipped["reason"])
    assert any(r.startswith("too-large: the image file is 3.0 MB") for r in ext_reasons)
    assert any(
        r.startswith("not-an-image: unrecognised signature (looks like text)") for r in ext_reasons
    )


def test_no_canary_reaches_any_output(outcome) -> None:
    texts = [out + err for _, out, err, _ in outcome["results"]]
    for canary in CANARIES:
        assert not any(canary in text for text in texts), canary
    for run in (outcome["ok_run"], outcome["ext_run"]):
        for path in run.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for canary in CANARIES:
                    assert canary.encode() not in data, (canary, path)
                    assert base64.b64encode(canary.encode())[:16] not in data, (canary, path)


def test_no_control_character_reaches_the_terminal(outcome) -> None:
    for _, out, err, _ in outcome["results"]:
        assert not CONTROL.search(out), out
        assert not CONTROL.search(err), err
    _, _, err, _ = outcome["results"][3]
    assert "\\x1b]0;owned\\x07" in err  # shown, escaped


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def live_markup(page: str) -> list[str]:
    """Tags or attributes that could run or load something, other than the report's figures."""
    parser = _Tags()
    parser.feed(page)
    bad = []
    for tag, attrs in parser.tags:
        if tag in ("script", "svg", "iframe", "object", "embed"):
            bad.append(tag)
        if any(name.startswith("on") for name in attrs):
            bad.append(f"{tag} with an on* attribute")
        if tag == "img" and not str(attrs.get("src", "")).startswith(
            ("data:image/png;base64,", "figures/")
        ):
            bad.append(f"img src={attrs.get('src')!r}")
        if tag == "a" and not str(attrs.get("href", "#")).startswith("#"):
            bad.append(f"a href={attrs.get('href')!r}")
    return bad


def test_reports_carry_no_live_markup(outcome) -> None:
    markdown_it = pytest.importorskip("markdown_it")
    for run in (outcome["ok_run"], outcome["ext_run"]):
        page = (run / "report" / "index.html").read_text(encoding="utf-8")
        assert live_markup(page) == []
        markdown = (run / "report" / "report.md").read_text(encoding="utf-8")
        rendered = markdown_it.MarkdownIt("commonmark", {"html": True}).render(markdown)
        assert live_markup(rendered) == []
    # the hostile names are shown, as text
    ok_page = (outcome["ok_run"] / "report" / "index.html").read_text(encoding="utf-8")
    assert "run&lt;img src=x onerror=alert(4)&gt;" in ok_page
    ext_md = (outcome["ext_run"] / "report" / "report.md").read_text(encoding="utf-8")
    assert "set&lt;svg onload=alert(5)&gt;" in ext_md


def test_csv_cells_never_start_a_formula(outcome) -> None:
    for run in (outcome["ok_run"], outcome["ext_run"]):
        for path in (run / "results").glob("*.csv"):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            for column in frame.columns:
                for cell in frame[column]:
                    if cell[:1] in ("=", "+", "@"):
                        pytest.fail(f"{path.name}: {cell!r}")
                    if cell.startswith("-"):  # numbers only
                        float(cell)


def test_the_whole_corpus_stays_under_2_gb(outcome) -> None:
    peak_gb = outcome["peak_kb"] * 1024 / 1e9
    running = [round(r[3] * 1024 / 1e9, 2) for r in outcome["results"]]  # peak so far, per command
    print(f"hostile corpus: peak RSS {peak_gb:.2f} GB; running peak per command {running}")
    assert peak_gb < 2.0, f"peak RSS {peak_gb:.2f} GB (running peak per command: {running})"
