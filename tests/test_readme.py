"""Every ```python example of README.md runs, with the outcome and the values its comments state."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytest.importorskip("transformers")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed
# modules in one process crashes, so everything the examples import is imported here first.
import hypothesis  # noqa: F401
import torch
import transformers.testing_utils  # noqa: F401
from transformers.generation.utils import GenerationMixin  # noqa: F401

from pytest_tokenguard import versions

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module", autouse=True)
def _modules_loaded_outside_pytester() -> None:
    """Build every family and generate once here: the model modules they import lazily (which vary by
    version) are then loaded before pytester's in-process runs, which drop modules first imported inside them."""

    from pytest_tokenguard.suite import zoo

    for family in zoo.families():
        model, _ = zoo.build(family)
    model.generate(torch.tensor([[1, 5]]), attention_mask=torch.ones(1, 2, dtype=torch.long), max_new_tokens=1)


#: what the names the examples take for granted are: the Qwen3-0.6B character-chat layout
PREAMBLE = """
import pytest
from pytest_tokenguard.suite import zoo

model, tokenizer = zoo.build("qwen3-0.6b")
model.generation_config.max_new_tokens = 2
tokenizer.padding_side = "right"
right_padded_batch = tokenizer(
    ["Hi.", "Who led the people out of Egypt?"], return_tensors="pt", padding=True, return_token_type_ids=False
)
"""

#: outcomes of the test functions each example defines, in README order
OUTCOMES = [
    {"passed": 2},  # the allow marker and expect() example
    {"failed": 1},  # tokenguard.check raises on the Qwen3 layout's TG201 pad error, as the comment says
    {},  # predicting and fixing: module-level code only
    {"passed": 1},  # the hypothesis strategy
    {"passed": 1},  # check_batch on a chat batch, and tokenguard.check_batch on a collated one
    {"passed": 11},  # test_my_collator over the 10 zoo families, and test_one
]


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def _leading_literal(text: str) -> str:
    """``"{'a': (1, 2)}: why"`` -> ``"{'a': (1, 2)}"`` (up to the bracket that closes the first one)."""
    depth = 0
    for index, char in enumerate(text):
        depth += 1 if char in "{[(" else -1 if char in "}])" else 0
        if depth == 0:
            return text[: index + 1]
    raise ValueError(f"unbalanced literal in {text!r}")


#: values the README states for the documented transformers (5.18+), as older versions give them
VERSION_DEPENDENT: dict[str, object] = {
    "predict_trainer_alignment(model, tokenizer)": (
        {"pad_token_id": 151643}
        if versions.trainer_aligns() and not versions.trainer_writes_none()
        else {"bos_token_id": None, "pad_token_id": 151643}
        if versions.trainer_aligns()
        else {}  # before 4.56 the Trainer aligns nothing
    ),
}


def with_stated_values_asserted(block: str) -> str:
    """``expression   # {'a': 1}: explanation`` becomes an assertion that the expression equals ``{'a': 1}``
    (or what the installed transformers gives, see ``VERSION_DEPENDENT``), right where the example evaluates it."""
    lines = []
    for line in block.splitlines():
        code, _, comment = line.partition("  # ")
        comment = comment.strip()
        if code.strip() and comment.startswith(("{", "[")):
            value = VERSION_DEPENDENT.get(code.strip(), ast.literal_eval(_leading_literal(comment)))
            line = f"_value = {code.strip()}\nassert _value == {value!r}, ({code.strip()!r}, _value)"
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_the_examples_are_the_ones_checked() -> None:
    assert len(python_blocks()) == len(OUTCOMES)
    assert with_stated_values_asserted(python_blocks()[2]).count("assert _value ==") == 2


@pytest.mark.parametrize("index", range(len(OUTCOMES)))
def test_readme_example_runs(pytester: pytest.Pytester, index: int) -> None:
    pytester.makepyfile(test_example=PREAMBLE + with_stated_values_asserted(python_blocks()[index]))
    result = pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider")
    result.assert_outcomes(**OUTCOMES[index])


def test_the_printed_report_is_the_one_shown() -> None:
    from pytest_tokenguard import check_special_tokens
    from pytest_tokenguard.suite import zoo

    block = python_blocks()[1]
    shown = [line.removeprefix("# ") for line in block.splitlines() if line.startswith("# ")]
    model, tokenizer = zoo.build("qwen3-0.6b")
    printed = str(check_special_tokens(model, tokenizer)).splitlines()
    summary = shown.index("1 error(s), 2 warning(s):")
    table = [line.rstrip() for line in shown[:summary]]  # the bos/eos/pad table, end of turn and vocab lines
    assert printed[: len(table)] == table and printed[len(table) + 1] == shown[summary]
    for line in shown[summary + 1 : shown.index("...")]:  # the README shows a part of the findings ("...")
        assert line.rstrip() in printed
