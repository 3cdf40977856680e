"""User stories for the static checks inside pytest: tokenguard.check(), --tokenguard-calls, synthesized TG101."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("peft")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed
# modules crashes, so everything the generated tests import is imported here first.
import peft  # noqa: F401
import transformers.trainer
from transformers.generation.utils import GenerationMixin

from pytest_tokenguard import versions

TRAINER_ALIGNS = versions.trainer_aligns()
SKIPS_NONE = versions.trainer_aligns() and not versions.trainer_writes_none()

pytest_plugins = ("pytester",)

HELPERS = """
import torch
from pytest_tokenguard import align_special_tokens
from pytest_tokenguard.suite import zoo

def tinyllama(aligned=False, dedicated_pad=False):
    model, tokenizer = zoo.build("tinyllama-1.1b-chat-v1.0")
    if dedicated_pad:  # TinyLlama pads with eos = its only stop id (TG206 error); unk is the usual Llama pad
        tokenizer.pad_token = tokenizer.unk_token
    if aligned:
        align_special_tokens(model, tokenizer)
    return model, tokenizer

def qwen3_aligned():
    model, tokenizer = zoo.build("qwen3-0.6b")
    align_special_tokens(model, tokenizer)
    return model, tokenizer

def generate(model, **kwargs):
    return model.generate(torch.tensor([[1, 5, 6]]), attention_mask=torch.ones(1, 3, dtype=torch.long),
                          max_new_tokens=2, do_sample=False, **kwargs)
"""


@pytest.fixture(scope="module")
def warmed_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run generate() and a Trainer step once outside pytester: modules they import lazily (which vary
    by version, e.g. torch.distributed pieces on 4.x) are then loaded before the in-process runs."""
    import torch

    from pytest_tokenguard.suite import zoo

    model, tokenizer = zoo.build("tinyllama-1.1b-chat-v1.0")
    model.generate(torch.tensor([[1, 5]]), attention_mask=torch.ones(1, 2, dtype=torch.long), max_new_tokens=1)
    zoo.lora_train(model, tokenizer, tmp_path_factory.mktemp("warm"), steps=1)


@pytest.fixture
def helpers(pytester: pytest.Pytester, warmed_up: None) -> pytest.Pytester:  # warmed_up: for its side effect
    pytester.makepyfile(tg_helpers=HELPERS)
    return pytester


def test_fixture_check_fails_with_table_and_honours_allow_marker(helpers: pytest.Pytester) -> None:
    helpers.makepyfile(
        """
        import pytest
        from tg_helpers import tinyllama

        def test_raw(tokenguard):
            tokenguard.check(*tinyllama())

        def test_aligned(tokenguard):
            report = tokenguard.check(*tinyllama(aligned=True, dedicated_pad=True))
            assert report.ok

        @pytest.mark.tokenguard_allow("TG201", "TG203", "TG206", reason="TinyLlama ships without a config pad")
        def test_allowed(tokenguard):
            tokenguard.check(*tinyllama())

        def test_strict_override(tokenguard):
            tokenguard.check(*tinyllama(aligned=True), strict=True)
        """
    )
    result = helpers.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=2, passed=2)
    result.stdout.fnmatch_lines(
        [
            "*TokenAlignmentError: special tokens are not aligned: TG201, TG203, TG206",
            "*model config*generation config*tokenizer*",
            "*pad*None*0 '<unk>'*2 '</s>'*",
            "*TG201 error: model config pad None vs tokenizer pad 2 '</s>'*",
            "*fix: model.config.pad_token_id = 2*",
        ]
    )
    # strict: the warnings fail too (TG215: the zoo's stand-in tokenizer adds no bos, see suite/expected.py)
    result.stdout.fnmatch_lines(["*TokenAlignmentError: special tokens are not aligned: TG206, TG215"])
    result.stdout.no_fnmatch_line("*TokenguardStaleAllowWarning*")


def test_strict_option_makes_warnings_fail(helpers: pytest.Pytester) -> None:
    helpers.makepyfile(
        """
        from tg_helpers import qwen3_aligned

        def test_aligned(tokenguard):
            tokenguard.check(*qwen3_aligned())  # warnings only: Qwen's missing BOS, pad among the stop ids
        """
    )
    helpers.runpytest().assert_outcomes(passed=1)
    strict = helpers.runpytest("--tokenguard-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*TG206 warning: pad is an eos token*"])
    helpers.makeini("[pytest]\ntokenguard_strict = true\n")
    helpers.runpytest().assert_outcomes(failed=1)


GENERATE_TESTS = """
    import pytest
    from tg_helpers import tinyllama, generate

    def test_bad_pad_in_generate():
        model, _ = tinyllama(aligned=True, dedicated_pad=True)
        generate(model, pad_token_id=99999)

    @pytest.mark.tokenguard_allow("TG204", reason="deliberately out of range")
    def test_allowed():
        model, _ = tinyllama(aligned=True, dedicated_pad=True)
        generate(model, pad_token_id=99999)

    def test_expected(tokenguard):
        model, _ = tinyllama(aligned=True, dedicated_pad=True)
        with tokenguard.expect("TG204"):
            generate(model, pad_token_id=99999)

    def test_clean_generate():
        model, tokenizer = tinyllama(aligned=True, dedicated_pad=True)
        generate(model, tokenizer=tokenizer)

    def test_misaligned_generation_config_with_tokenizer():
        model, tokenizer = tinyllama()
        generate(model, tokenizer=tokenizer)
"""


def test_calls_checks_every_generate(helpers: pytest.Pytester) -> None:
    helpers.makepyfile(GENERATE_TESTS)
    without = helpers.runpytest("--tokenguard", "-p", "no:randomly", "-k", "not expected")
    without.assert_outcomes(passed=4)  # opt-in: nothing checked at the call without --tokenguard-calls

    result = helpers.runpytest("--tokenguard", "--tokenguard-calls", "-p", "no:randomly", "--tokenguard-report", "report.json")
    result.assert_outcomes(failed=2, passed=3)
    result.stdout.fnmatch_lines(
        [
            "TG204 special token id out of range",
            "  message: generation config pad 99999: >= the 32000 embedding rows [at generate()]",
            "  logger:  pytest_tokenguard.calls (check, ERROR)",
        ]
    )
    result.stdout.fnmatch_lines(["*test_misaligned_generation_config_with_tokenizer*TG203*"])
    report = json.loads((helpers.path / "report.json").read_text())
    by_test = {nodeid.split("::")[1]: test for nodeid, test in report["tests"].items()}
    assert [f["code"] for f in by_test["test_allowed"]["findings"]] == ["TG204"]
    assert by_test["test_allowed"]["findings"][0]["allowed"] is True
    assert by_test["test_expected"]["findings"][0]["expected"] is True
    assert by_test["test_misaligned_generation_config_with_tokenizer"]["findings"][0]["details"]["at"] == "generate()"


def test_calls_via_ini_and_checks_trainer_train(helpers: pytest.Pytester) -> None:
    helpers.makeini("[pytest]\ntokenguard = true\ntokenguard_calls = true\n")
    helpers.makepyfile(
        """
        import pytest
        from pytest_tokenguard.suite import zoo
        from tg_helpers import tinyllama

        @pytest.mark.tokenguard_allow("TG101", reason="only the static findings are under test here")
        def test_train_raw(tmp_path):
            model, tokenizer = tinyllama()
            zoo.lora_train(model, tokenizer, tmp_path, steps=1, lora=False)
        """
    )
    result = helpers.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "TG201 model config and tokenizer disagree on a special token",
            "  message: model config pad None vs tokenizer pad 2 '</s>': Trainer.train() rewrites the model config to 2 "
            "[at Trainer.train()]",
        ]
    )
    result.stdout.fnmatch_lines(["*TG203*"])


TRAIN_RAW_QWEN3 = """
    from pytest_tokenguard.suite import zoo

    def test_train_raw(tmp_path):
        model, tokenizer = zoo.build("qwen3-0.6b")
        zoo.lora_train(model, tokenizer, tmp_path, steps=1)
"""


def _tg101(pytester: pytest.Pytester) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    (test,) = json.loads((pytester.path / "report.json").read_text())["tests"].values()
    tg101 = [f for f in test["findings"] if f["code"] == "TG101"]
    return ([f for f in tg101 if not f["details"].get("synthesized")], [f for f in tg101 if f["details"].get("synthesized")])


def test_same_verdict_on_every_version(helpers: pytest.Pytester) -> None:
    # Default (auto): the installed Trainer's own TG101 where it aligns (>= 4.56), a synthesized one
    # where it does not; either way the test fails with TG101 and the same tokens.
    helpers.makepyfile(TRAIN_RAW_QWEN3)
    result = helpers.runpytest("--tokenguard", "--tokenguard-report", "report.json")
    result.assert_outcomes(failed=1)
    real, synthesized = _tg101(helpers)
    found = real if TRAINER_ALIGNS else synthesized
    assert len(real + synthesized) == 1
    expected = {"pad_token_id": 151643} if SKIPS_NONE or not TRAINER_ALIGNS else {"bos_token_id": None, "pad_token_id": 151643}
    assert found[0]["details"]["updated_tokens"] == expected
    if not TRAINER_ALIGNS:
        result.stdout.fnmatch_lines(
            [
                f"  note:    synthesized: transformers {transformers.__version__} does not align special tokens in "
                "Trainer.train(); this is what transformers >= 5.18 would do",
            ]
        )


@pytest.mark.skipif(
    not SKIPS_NONE,
    reason="needs a Trainer with the >= 5.18 algorithm to compare the synthesized "
    "finding with (older ones propagate None or do not align)",
)
def test_synthesized_trainer_alignment_matches_the_real_one(helpers: pytest.Pytester) -> None:
    # "always" adds what transformers >= 5.18 would log next to what the installed Trainer logs:
    # here both must be the same finding, which is what older versions then get.
    helpers.makeini("[pytest]\ntokenguard_synthesize = always\n")
    helpers.makepyfile(TRAIN_RAW_QWEN3)
    result = helpers.runpytest("--tokenguard", "--tokenguard-report", "report.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"  note:    synthesized: transformers {transformers.__version__} does not align special tokens in "
            "Trainer.train(); this is what transformers >= 5.18 would do",
        ]
    )
    real, synthesized = _tg101(helpers)
    assert len(real) == 1 and len(synthesized) == 1
    assert real[0]["details"]["updated_tokens"] == synthesized[0]["details"]["updated_tokens"] == {"pad_token_id": 151643}
    assert synthesized[0]["message"] == real[0]["message"]


def test_synthesize_ini_is_validated(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntokenguard_synthesize = sometimes\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--tokenguard")
    result.stderr.fnmatch_lines(["*tokenguard_synthesize must be auto, always or never*"])


def test_wrappers_exist_only_while_the_guard_is_on(helpers: pytest.Pytester) -> None:
    original_train = transformers.trainer.Trainer.__dict__["train"]
    original_generate = GenerationMixin.__dict__["generate"]
    helpers.makepyfile(
        """
        import transformers.trainer
        from transformers.generation.utils import GenerationMixin

        def test_wrapped():
            assert hasattr(GenerationMixin.__dict__["generate"], "__tokenguard_original__")
            assert hasattr(transformers.trainer.Trainer.__dict__["train"], "__tokenguard_original__")
        """
    )
    helpers.runpytest("--tokenguard", "--tokenguard-calls").assert_outcomes(passed=1)
    assert transformers.trainer.Trainer.__dict__["train"] is original_train
    assert GenerationMixin.__dict__["generate"] is original_generate
    helpers.runpytest("--tokenguard").assert_outcomes(failed=1)  # not wrapped without --tokenguard-calls
