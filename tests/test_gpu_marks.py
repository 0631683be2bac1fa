"""Every test that puts work on a CUDA device carries the `gpu` marker (so `-m gpu` finds them all
and `bench/gpu-check` can count them), and skips itself where no GPU is visible."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).parent
#: Work placed on a CUDA device: `.cuda()`, `device="cuda"`, `.to("cuda")`, `torch.device("cuda")`.
CUDA_USE = re.compile(
    r"\.cuda\(|device\s*=\s*[\"']cuda|\.to\(\s*[\"']cuda|torch\.device\(\s*[\"']cuda"
)


def unmarked_cuda_tests(source: str) -> list[str]:
    """Names of test functions in `source` that use CUDA without the gpu marker or a skip."""
    tree = ast.parse(source)
    module_marked = any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
        and "mark.gpu" in ast.unparse(node.value)
        for node in tree.body
    )
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if not node.name.startswith("test"):
            continue
        decorators = [ast.unparse(d) for d in node.decorator_list]
        body = "\n".join(ast.unparse(statement) for statement in node.body)
        uses = bool(CUDA_USE.search(body)) or any("cuda.is_available" in d for d in decorators)
        marked = module_marked or any("mark.gpu" in d for d in decorators)
        skips = any("cuda.is_available" in d for d in decorators) or "cuda.is_available" in body
        if uses and not (marked and skips):
            found.append(node.name)
    return found


def test_every_cuda_test_is_marked_gpu_and_skips_without_one() -> None:
    offenders = {
        path.name: names
        for path in sorted(TESTS.glob("*.py"))
        if path.name != Path(__file__).name
        and (names := unmarked_cuda_tests(path.read_text(encoding="utf-8")))
    }
    assert not offenders, f"mark these @pytest.mark.gpu and skip without CUDA: {offenders}"


def test_the_check_sees_an_unmarked_test() -> None:
    source = (
        "import pytest, torch\n"
        "def test_a():\n    torch.zeros(1).cuda()\n"
        "@pytest.mark.gpu\n"
        "@pytest.mark.skipif(not torch.cuda.is_available(), reason='x')\n"
        "def test_b():\n    torch.zeros(1, device='cuda')\n"
        "def test_c():\n    torch.zeros(1, device='cuda:1')\n"
        "def test_d():\n    torch.zeros(1)\n"
    )
    assert unmarked_cuda_tests(source) == ["test_a", "test_c"]
