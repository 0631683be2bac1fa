"""Downloading datasets from their real home, the Hugging Face hub (for connected login nodes)."""

from __future__ import annotations

import os
from pathlib import Path

#: name → (dataset repo, files to fetch)
DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "unsafebench": ("yiting/UnsafeBench", ("data/*.parquet", "README.md")),
    # The VLM answers the paper published (<model>/prompt_<i>/<source>_<category>.json); a run
    # replays GPT-4V's from here with vlm.responses_dir = DIR.
    "vlm-responses": ("yiting/unsafebench_vlm_responses", ("*",)),
    "smid": ("yiting/SMID", ("*.parquet", "**/*.parquet", "README.md")),
    "nsfwdataset": ("yiting/NSFWDataset", ("*.parquet", "**/*.parquet", "README.md")),
    "multiheaded-dataset": (
        "yiting/MultiHeaded_Dataset",
        ("*.parquet", "**/*.parquet", "README.md"),
    ),
    "violence-dataset": ("yiting/Violence_Dataset", ("*.parquet", "**/*.parquet", "README.md")),
    "self-harm-dataset": ("yiting/Self-harm_Dataset", ("*.parquet", "**/*.parquet", "README.md")),
    # I2P's 4,703 prompts (MIT): one CSV, read by `ubsafe.prompts` (`open_prompts(DIR)`).
    "i2p": ("AIML-TUDA/i2p", ("i2p_benchmark.csv", "README.md")),
}


class FetchError(RuntimeError):
    pass


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """The hub client's message on one line (it spans several), shortened."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fetch_dataset(name: str, to: str | os.PathLike[str]) -> Path:
    """Download dataset `name` into `to` with the hub client; gated repos read HF_TOKEN."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    repo, patterns = DATASETS[name]
    target = Path(to)
    try:
        snapshot_download(
            repo_id=repo,
            repo_type="dataset",
            local_dir=target,
            allow_patterns=list(patterns),
            token=os.environ.get("HF_TOKEN") or None,
        )
    except GatedRepoError:
        raise FetchError(
            f"{repo} is gated: accept its terms at https://huggingface.co/datasets/{repo} "
            "and set HF_TOKEN to a token of that account"
        ) from None
    except RepositoryNotFoundError:
        raise FetchError(f"{repo} was not found (or needs HF_TOKEN)") from None
    except HfHubHTTPError as exc:
        raise FetchError(f"downloading {repo} failed: {_one_line(exc)}") from None
    except OSError as exc:
        raise FetchError(
            f"downloading {repo} failed (no network?): {_one_line(exc)}; fetch on a node with"
            f" internet access and copy {target} here"
        ) from None
    return target
