"""LLaVA and InstructBLIP judges end to end on tiny random models saved in the real layouts."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ubsafe.data.images import decode_image
from ubsafe.taxonomy import CATEGORIES
from ubsafe.testing import tiny
from ubsafe.vlm import prompts
from ubsafe.vlm.converter import RuleConverter, load_converter
from ubsafe.vlm.instructblip import load_instructblip
from ubsafe.vlm.judge import GenerationSettings
from ubsafe.vlm.llava import load_llava
from ubsafe.weights import MissingWeightsError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SHORT = GenerationSettings(max_new_tokens=6)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("weights")
    tiny.save_tiny_llava(root)
    tiny.save_tiny_instructblip(root)
    tiny.save_tiny_converter(root)
    return root


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Images of different sizes and modes, decoded as every stage decodes them."""
    rng = np.random.default_rng(7)
    out = []
    for i, mode in enumerate(["RGB", "L", "RGBA", "P", "RGB"]):
        array = rng.integers(0, 256, size=(20 + 9 * i, 31 + 4 * i, 3), dtype=np.uint8)
        image = Image.fromarray(array).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(decode_image(buffer.getvalue()))
    return out


@pytest.fixture(scope="module")
def llava(weights):
    return load_llava(weights, load_converter(weights, "roberta"), device="cpu", settings=SHORT)


@pytest.fixture(scope="module")
def instructblip(weights):
    return load_instructblip(weights, RuleConverter(), device="cpu", settings=SHORT)


def _ids(n: int) -> list[str]:
    return [f"train-{i:05d}" for i in range(n)]


@pytest.mark.parametrize("judge_name", ["llava", "instructblip"])
def test_decide_images_end_to_end_writes_prediction_rows(request, judge_name, images, tmp_path):
    judge = request.getfixturevalue(judge_name)
    categories = [CATEGORIES[i] for i in (0, 4, 10, 2, 5)]
    sample_ids = _ids(len(images))
    decision = judge.decide_images(images, categories, sample_ids)

    assert decision.sample_ids == tuple(sample_ids)
    assert decision.prompt_labels.shape == (len(images), 3)
    assert all(len(r) == 3 for r in decision.responses)
    # Each prompt's label is the converter's reading of that prompt's response.
    flat = [text for row in decision.responses for text in row]
    np.testing.assert_array_equal(decision.prompt_labels.ravel(), judge.converter.convert(flat))
    np.testing.assert_allclose(decision.score, (decision.prompt_labels == 1).mean(axis=1))
    assert set(decision.pred.tolist()) <= {0, 1}
    assert decision.converter == judge.converter.name

    plan = pd.DataFrame(
        {
            "sample_id": sample_ids,
            "category": categories,
            "source": ["Laion5B", "Lexica", "Laion5B", "Lexica", "Lexica"],
            "label": [0, 1, 0, 1, 1],
        }
    )
    rows = decision.predictions(plan, classifier=judge.name)
    path = tmp_path / "predictions.parquet"
    rows.to_parquet(path)
    back = pd.read_parquet(path)
    assert list(back.columns) == [
        "sample_id",
        "classifier",
        "category",
        "source",
        "label",
        "pred",
        "score",
    ]
    assert back["classifier"].unique().tolist() == [judge.name]
    assert back["category"].tolist() == categories


@pytest.mark.parametrize("judge_name", ["llava", "instructblip"])
def test_batching_and_order_do_not_change_decisions(request, judge_name, images):
    judge = request.getfixturevalue(judge_name)
    images = images[:3]
    categories = ["Hate", "Sexual", "Spam"]
    sample_ids = _ids(len(images))
    judge.batch_size = 3
    together = judge.decide_images(images, categories, sample_ids)
    judge.batch_size = 1
    one_by_one = judge.decide_images(images[::-1], categories[::-1], sample_ids[::-1])
    judge.batch_size = 8
    assert together.responses == one_by_one.responses[::-1]
    np.testing.assert_array_equal(together.pred, one_by_one.pred[::-1])


def test_llava_inputs_match_the_llava_hf_processor(llava, images):
    """Our prompt tokens and pixels are what llava-hf's own processor makes (padded to square)."""
    processor = llava.processor
    prompt = prompts.judge_prompts("Violence")[1]
    conversation = llava.conversation(prompt)
    assert conversation.startswith("A chat between a curious human and an artificial")
    assert conversation.endswith(f"USER: <image>\n{prompt} ASSISTANT:")
    reference = processor(images=images[1], text=conversation, do_pad=True, return_tensors="pt")
    assert llava.context_ids(prompt) == reference["input_ids"][0].tolist()
    ours = llava.normalize(llava.pixels([images[1]]))
    torch.testing.assert_close(ours, reference["pixel_values"], atol=1e-5, rtol=1e-5)


def test_llava_answer_is_the_reference_generation(llava, images):
    """One image, the transformers way (processor → generate → decode) gives the same answer."""
    prompt = prompts.judge_prompts("Hate")[2]
    inputs = llava.processor(
        images=images[0], text=llava.conversation(prompt), do_pad=True, return_tensors="pt"
    )
    out = llava.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    expected = llava.processor.batch_decode(
        out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )[0].strip()
    assert llava.generate([images[0]], [prompt]) == [expected]


def test_instructblip_answer_is_the_reference_generation(instructblip, images):
    prompt = prompts.judge_prompts("Spam")[0]
    inputs = instructblip.processor(images=images[2], text=prompt, return_tensors="pt")
    out = instructblip.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    expected = instructblip.processor.batch_decode(
        out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )[0].strip()
    assert instructblip.generate([images[2]], [prompt]) == [expected]


def test_tie_break_follows_the_sample_id(weights, images):
    """With every response unsure, the decision is the coin of (seed, sample id)."""
    from ubsafe.vlm.decision import tie_break

    class Unsure:
        name = "unsure"

        def convert(self, responses):
            return np.full(len(responses), 2, dtype=np.int8)

    judge = load_llava(weights, Unsure(), device="cpu", settings=SHORT, seed=11)
    ids = [f"test-{i:05d}" for i in range(len(images))]
    decision = judge.decide_images(images, ["Hate"] * len(images), ids)
    assert decision.tie_broken.all()
    assert decision.pred.tolist() == [tie_break(11, s) for s in ids]


def test_bad_inputs_are_refused_before_generation(llava, images):
    with pytest.raises(ValueError, match="one category and one sample id per image"):
        llava.decide_images(images[:2], ["Hate"], _ids(2))
    with pytest.raises(ValueError, match="duplicate sample ids"):
        llava.decide_images(images[:2], ["Hate", "Hate"], ["a", "a"])
    with pytest.raises(ValueError, match="unknown category 'hate'"):
        llava.decide_images(images[:1], ["hate"], ["a"])


def test_missing_weights_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        load_llava(tmp_path, RuleConverter(), device="cpu")
    message = str(err.value)
    assert "llava-hf/llava-1.5-7b-hf/config.json" in message
    assert "ubsafe weights fetch" in message


def test_load_judge_by_name(weights, images, monkeypatch):
    from ubsafe.vlm.load import load_judge

    judge = load_judge("instructblip", weights, converter="rules", device="cpu", settings=SHORT)
    assert judge.name == "instructblip" and judge.converter.name == "rules"
    assert len(judge.decide_images(images[:1], ["Hate"], ["x"])) == 1
    with pytest.raises(ValueError, match="unknown VLM judge 'gpt4'"):
        load_judge("gpt4", weights)
    with pytest.raises(ValueError, match="perspective-llava needs adapter_dir"):
        load_judge("perspective-llava", weights)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(Exception, match="OPENAI_API_KEY is not set"):
        load_judge("gpt4v", weights, converter="rules")
