"""The classifier registry files, weight checks before loading, and safe deserialisation."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from classifier_fixtures import (
    hub_path,
    prompt_pickle_bytes,
    random_multiheaded_states,
    write_multiheaded,
    write_q16,
)

from ubsafe.classifiers import (
    RegistryError,
    UnknownClassifierError,
    get_entry,
    list_classifiers,
    load_classifier,
    missing_weights,
    weight_files,
)
from ubsafe.classifiers.registry import REGISTRY_DIR, parse_entry, read_registry
from ubsafe.classifiers.safe_pickle import load_numpy_pickle
from ubsafe.weights import MissingWeightsError

# The paper's coverage (UnsafeBench `unsafe_datasets.align_unsafe_categories`).
PAPER_COVERAGE = {
    "q16": {
        "Hate", "Harassment", "Violence", "Self-harm", "Shocking", "Illegal activity",
        "Deception", "Political", "Public and personal health",
    },
    "multiheaded": {"Sexual", "Violence", "Shocking", "Hate", "Political"},
    "sd_filter": {"Sexual"},
    "nsfw_detector": {"Harassment", "Sexual"},
    "nudenet": {"Sexual"},
}  # fmt: skip


#: The vision-language judges and the two PerspectiveVision variants (tests/test_vlm_stage*.py).
VLM_ENTRIES = ("llava", "instructblip", "gpt4v", "perspective-llava", "perspective-fast")


def test_registry_lists_the_paper_classifiers_and_the_probes() -> None:
    names = [entry.name for entry in list_classifiers()]
    assert names == sorted(names)
    assert set(names) == {*PAPER_COVERAGE, "probe-real", "probe-all", *VLM_ENTRIES}


@pytest.mark.parametrize("name", sorted(PAPER_COVERAGE))
def test_default_coverage_is_the_papers(name: str) -> None:
    assert set(get_entry(name).categories) == PAPER_COVERAGE[name]


def test_entries_name_their_encoders_weights_and_modules() -> None:
    assert {e.name: e.encoder for e in list_classifiers()} == {
        "q16": "vit-l-14-openai",
        "multiheaded": "vit-l-14-openai",
        "nsfw_detector": "vit-l-14-openai",
        "sd_filter": "sd-checker",
        "nudenet": "none",
        "probe-real": "run",
        "probe-all": "run",
        "perspective-fast": "run",
        **dict.fromkeys(VLM_ENTRIES[:-1], "none"),
    }
    heads = [(w.repo, w.filename) for w in weight_files("multiheaded")]
    assert heads == [
        ("yiting/MultiHeaded", f"{h}.pt")
        for h in ("sexual", "violent", "disturbing", "hateful", "political")
    ]
    assert [(w.repo, w.filename) for w in weight_files("nsfw_detector")] == [
        ("yiting/NSFWDetector", "clip_autokeras_binary_nsfw.pth")
    ]
    assert get_entry("probe-real").train_sources == ("real",)
    assert get_entry("probe-all").train_sources == ("real", "ai")
    for entry in list_classifiers():
        assert entry.description and entry.notes and entry.score
        module = __import__(entry.module, fromlist=["load"])
        assert callable(module.load)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(
        UnknownClassifierError, match=r"'q61'.*multiheaded, nsfw_detector.*sd_filter"
    ):
        get_entry("q61")


def test_reading_the_registry_imports_no_heavy_library() -> None:
    code = (
        "import sys, ubsafe.classifiers as c; c.list_classifiers(); "
        "heavy = ('torch', 'sklearn', 'onnxruntime', 'transformers'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"


MALFORMED = [
    ('paper_name = "Q16"\n', "", "'paper_name' is missing"),
    ("attackable = true", 'attackable = "yes"', "'attackable' must be a bool"),
    ('"Self-harm",', '"Self harm",', "'categories' has 'Self harm'"),
    ('input = "embedding"', 'input = "pixels"', "'input' is 'pixels'"),
    ('name = "q16"', 'name = "q17"', "'name' is 'q17' but the file is named q16.toml"),
    ('filename = "prompts.p"', 'file = "prompts.p"', "'weights\\[0\\].file' is not a weight key"),
    ("fitted = false", "fitted = false\nweigths = []", "'weigths' is not a registry key"),
    ("fitted = false", "fitted = true", "'encoder' must be 'run' for a fitted classifier"),
    ('repo = "yiting/Q16"', 'repo = "Q16"', "'weights\\[0\\].repo' is 'Q16'"),
    ("categories = [", 'categories = [\n    "Hate",', "'categories' lists a value twice"),
]


@pytest.mark.parametrize(("old", "new", "message"), MALFORMED)
def test_a_malformed_entry_names_the_file_and_the_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    text = (REGISTRY_DIR / "q16.toml").read_text()
    assert old in text
    path = tmp_path / "q16.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(RegistryError, match=f"{path}: key {message}"):
        parse_entry(path)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text('name = "broken"\ncategories = [\n')
    with pytest.raises(RegistryError, match=r"broken\.toml: not valid TOML"):
        read_registry(tmp_path)


def test_a_new_entry_is_one_file(tmp_path: Path) -> None:
    shutil.copy(REGISTRY_DIR / "q16.toml", tmp_path / "q16.toml")
    text = (REGISTRY_DIR / "q16.toml").read_text().replace('name = "q16"', 'name = "q16-b16"')
    (tmp_path / "q16-b16.toml").write_text(text)
    assert list(read_registry(tmp_path)) == ["q16", "q16-b16"]


# --- weights are checked before anything loads ---------------------------------------------------


def test_missing_weights_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as caught:
        load_classifier("q16", tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "hf" / "yiting" / "Q16" / "prompts.p") in message
    assert "ubsafe weights fetch" in message


def test_only_the_missing_files_are_listed_and_checked_before_loading(tmp_path: Path) -> None:
    write_multiheaded(
        tmp_path, random_multiheaded_states(np.random.default_rng(0), dim=8, hidden=4)
    )
    (tmp_path / "hf" / "yiting" / "MultiHeaded" / "political.pt").unlink()
    # A broken file that is present must not be read before the absent one is reported.
    (tmp_path / "hf" / "yiting" / "MultiHeaded" / "sexual.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError) as caught:
        load_classifier("multiheaded", tmp_path)
    assert [path.name for _, path in caught.value.missing] == ["political.pt"]
    assert [p.name for p in missing_weights("multiheaded", tmp_path)] == ["political.pt"]


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    write_q16(tmp_path, np.ones((2, 8)))
    with pytest.raises(ValueError, match="q16: unknown option 'threshold'; q16's options: none"):
        load_classifier("q16", tmp_path, options={"threshold": 0.3})


# --- safe deserialisation ----------------------------------------------------------------------


class RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_q16_prompt_file_in_both_numpy_layouts_loads(tmp_path: Path) -> None:
    prompts = np.random.default_rng(0).normal(0, 1, (2, 8)).astype(np.float16)
    old = tmp_path / "old.p"
    old.write_bytes(prompt_pickle_bytes(prompts))
    assert b"numpy.core.multiarray" in old.read_bytes()
    new = tmp_path / "new.p"
    new.write_bytes(pickle.dumps(prompts, protocol=3))
    for path in (old, new):
        loaded = load_numpy_pickle(path)
        assert loaded.dtype == np.float16
        np.testing.assert_array_equal(loaded, prompts)


def test_q16_prompt_pickle_that_runs_a_command_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights"
    hub_path(weights, "yiting/Q16", "prompts.p").write_bytes(
        pickle.dumps(RunsCommand(marker), protocol=3)
    )
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global posix\.system"):
        load_classifier("q16", weights)
    assert not marker.exists()


def test_q16_prompt_pickle_of_another_object_is_refused(tmp_path: Path) -> None:
    hub_path(tmp_path, "yiting/Q16", "prompts.p").write_bytes(
        pickle.dumps({"prompts": [1.0]}, protocol=3)
    )
    with pytest.raises(pickle.UnpicklingError, match="holds a dict, not a numpy array"):
        load_classifier("q16", tmp_path)


def test_torch_checkpoint_that_runs_a_command_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    states = random_multiheaded_states(np.random.default_rng(0), dim=8, hidden=4)
    write_multiheaded(tmp_path, states)
    evil = OrderedDict(states["sexual"])
    evil["payload"] = RunsCommand(marker)  # type: ignore[assignment]
    torch.save(evil, hub_path(tmp_path, "yiting/MultiHeaded", "sexual.pt"))
    with pytest.raises(ValueError, match=r"sexual\.pt is not a plain tensor checkpoint"):
        load_classifier("multiheaded", tmp_path)
    assert not marker.exists()


def test_a_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    torch.save(
        torch.nn.Linear(4, 1),
        hub_path(tmp_path, "yiting/NSFWDetector", "clip_autokeras_binary_nsfw.pth"),
    )
    with pytest.raises(ValueError, match="not a plain tensor checkpoint"):
        load_classifier("nsfw_detector", tmp_path)


def test_a_head_with_wrong_keys_names_them(tmp_path: Path) -> None:
    states = random_multiheaded_states(np.random.default_rng(0), dim=8, hidden=4)
    del states["violent"]["3.running_var"]
    write_multiheaded(tmp_path, states)
    with pytest.raises(
        ValueError,
        match=r"violent.pt does not have the expected layout: missing keys \['3.running_var'\]",
    ):
        load_classifier("multiheaded", tmp_path)
