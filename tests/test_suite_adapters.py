"""The bundled suite on an adapter whose own embedding matrices differ from the base's (TG210), and on checkpoints
that do not load: run from the installed package in a fresh process, as tests/test_suite.py runs it.

The real case is tests/data/cases/adapter-resized-embeddings (base 300 rows; adapter/ and adapter-notok/ carry
302-row embed_tokens and lm_head). Where the adapter's matrices have more rows, the suite resizes the base to them
before PeftModel.from_pretrained, as a user must, and says so (``TG210~`` and a note under the table); where no
resize makes it load (fewer rows), or the files do not load at all, static_check fails naming the file and every
other step is skipped with that reason: no "size mismatch" traceback, once per step, any more."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_tokenguard.suite import zoo
from pytest_tokenguard.suite.support import Loading, resize_plan
from pytest_tokenguard.suite.table import SUITE_CODES_PROPERTY, SUITE_NOTE_PROPERTY, SUITE_PROPERTY, SuiteTable
from tests.test_suite import SFT_OUTCOME, run_suite

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from tests.test_folder_rows import CASE_UNREADABLE, CHATML_TOKENS, tiny_qwen2  # noqa: E402

# The stories run on the case's files (written by transformers 5 and peft 0.21.2) and compare exact suite cells;
# where this transformers or peft cannot load those files, every step is a load failure instead (which the
# suite reports cleanly: the stories here are about what happens once they load).
pytestmark = pytest.mark.skipif(
    CASE_UNREADABLE is not None,
    reason=f"the case was written by transformers 5 / peft 0.21.2 and this version cannot load it ({CASE_UNREADABLE})",
)

CASE = Path(__file__).resolve().parent / "data" / "cases" / "adapter-resized-embeddings"
INPUT, OUTPUT = "input_embeddings", "output_embeddings"
STEPS = ["static_check", "lora_training", "sft_trainer", "labels_keep_eos", "save_and_reload", "generation"]


def resize_note(base_rows: int, rows: int) -> str:
    return (
        f"TG210: the adapter carries its own {rows}-row embedding matrices and the base has {base_rows} rows: the suite "
        f"resized the base to {rows} (model.resize_token_embeddings({rows})) before PeftModel.from_pretrained, as "
        "every user of this adapter must"
    )


def run_on(tmp_path: Path, base: Path, adapter: Path) -> tuple[int, dict[str, Any], str]:
    """The suite on ``base`` + ``adapter``: exit status, the report's one row (step -> cell), the output."""
    run = run_suite(
        tmp_path, "--tokenguard-model", str(base), "--tokenguard-adapter", str(adapter), "--tokenguard-report", "r.json"
    )
    output = run.stdout + run.stderr
    suite = json.loads((tmp_path / "r.json").read_text())["suite"]
    assert list(suite) == [f"model:{base.name}"], output[-4000:]
    return run.returncode, suite[f"model:{base.name}"], output


def cell(outcome: str, codes: dict[str, str] | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    return {"outcome": outcome, "codes": codes or {}, "notes": notes or []}


def sft_cell(codes: dict[str, str]) -> dict[str, Any]:
    """trl's SFTTrainer step: ``codes`` where trl is installed, skipped (no codes) where not."""
    return cell("failed" if codes else "passed", codes) if SFT_OUTCOME == "passed" else cell("skipped")


def assert_no_raw_load_error(output: str) -> None:
    assert "size mismatch" not in output and "Error(s) in loading state_dict" not in output, output[-4000:]


# -- the real case: the base resized to the adapter's 302 rows, then every step runs --------------------------------

PAD_IS_EOS_TRAINING = {
    "lora_training": cell("failed", {"TG101": "failing"}),  # the Trainer copies the tokenizer's pad 2 onto the configs
    "sft_trainer": sft_cell({"TG102": "failing"}),
    "labels_keep_eos": cell("failed", {"TG206": "failing", "TG303": "failing"}),  # pad = eos: every eos masked
    "save_and_reload": cell("failed", {"TG101": "failing", "TG201": "failing", "TG203": "failing", "TG210": "expected"}),
    # TG215: the case's reduced tokenizer.json encodes without <s> (its post-processor adds nothing)
    "generation": cell("failed", {"TG201": "failing", "TG203": "failing", "TG206": "static", "TG215": "static"}),
    "character_chat_moses": cell("skipped"),
}


@pytest.mark.parametrize(
    ("adapter", "static_check"),
    [
        # the adapter's tokenizer pads with eos </s> (302 tokens); the base config has no pad: TG201/TG203 as on any
        # checkpoint, the adapter's rows allowed once the base is resized
        (
            "adapter",
            cell(
                "failed",
                {"TG201": "failing", "TG203": "failing", "TG206": "static", "TG210": "expected", "TG215": "static"},
                [resize_note(300, 302)],
            ),
        ),
        # no tokenizer beside the adapter: the base's (300 tokens, no pad: TG207); pad = eos from the usual set-up on
        ("adapter-notok", cell("passed", {"TG207": "static", "TG210": "expected", "TG215": "static"}, [resize_note(300, 302)])),
    ],
)
def test_case_adapter_runs_every_step_on_the_resized_base(tmp_path: Path, adapter: str, static_check: dict[str, Any]) -> None:
    # before: seven errors at setup, each a RuntimeError "size mismatch for ...embed_tokens.weight ... [302, 16] ...
    # [300, 16]", and a table of FAIL without a code
    status, row, output = run_on(tmp_path, CASE / "base", CASE / adapter)
    assert status == 1
    assert_no_raw_load_error(output)
    assert row == {"static_check": static_check, **PAD_IS_EOS_TRAINING}
    assert f"model:base static_check: {resize_note(300, 302)}\n" in output
    marks = {"static": "", "expected": "~", "failing": "!"}
    static_text = ",".join(code + marks[kind] for code, kind in sorted(static_check["codes"].items()))
    (table,) = [line for line in output.splitlines() if line.startswith("model:base  ")]
    assert table.split()[1:3] == ["ok" if static_check["outcome"] == "passed" else "FAIL", static_text]
    assert " FAIL TG101!,TG201!,TG203!,TG210~ " in table  # save_and_reload: the check's TG210 allowed, as above


# -- siblings built with peft ------------------------------------------------------------------------------------------


def save_adapter(model: Any, lora: Any, folder: Path, **kwargs: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes on tied weights, Conv1D and embedding layers
        peft.get_peft_model(model, lora).save_pretrained(folder, **kwargs)


@pytest.fixture(scope="module")
def qwen_grown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An aligned, tied Qwen2-style base (300 rows, pad of its own, left padding); its adapter saved after adding two
    tool-call tokens and resizing with pad_to_multiple_of=8 (304 rows for 302 tokens), LoRA on q/v with
    ``save_embedding_layers=True``, tokenizer beside it."""
    root = tmp_path_factory.mktemp("qwen-grown")
    base = tiny_qwen2(layers=1)
    base.save_pretrained(root / "base")
    tokenizer = zoo.build_tokenizer(CHATML_TOKENS)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(root / "base")

    model = transformers.AutoModelForCausalLM.from_pretrained(root / "base")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>"]})
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=8, mean_resizing=False)
    lora = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    save_adapter(model, lora, root / "adapter", save_embedding_layers=True)
    tokenizer.save_pretrained(root / "adapter")
    return root


def test_grown_qwen_adapter_passes_every_step(qwen_grown: Path, tmp_path: Path) -> None:
    status, row, output = run_on(tmp_path, qwen_grown / "base", qwen_grown / "adapter")
    assert status == 0, output[-4000:]
    assert_no_raw_load_error(output)
    assert row == {
        "static_check": cell("passed", {"TG210": "expected"}, [resize_note(300, 304)]),
        "lora_training": cell("passed"),
        "sft_trainer": cell(SFT_OUTCOME),
        "labels_keep_eos": cell("passed"),
        # retrained, saved with its 304-row matrices, reloaded onto the base resized again: the check's TG210 allowed
        "save_and_reload": cell("passed", {"TG210": "expected"}),
        "generation": cell("passed"),
        "character_chat_moses": cell("skipped"),
    }
    (table,) = [line for line in output.splitlines() if line.startswith("model:base  ")]
    sft = "ok" if SFT_OUTCOME == "passed" else "skip"
    assert table.split() == ["model:base", "ok", "TG210~", "ok", sft, "ok", "ok", "TG210~", "ok", "skip"]
    assert f"model:base static_check: {resize_note(300, 304)}\n" in output


@pytest.fixture(scope="module")
def gpt2_modules_to_save(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GPT-2 (tied) as the base; its adapter saved after adding a pad token and resizing to 50258, LoRA on c_attn with
    ``modules_to_save=["wte", "lm_head"]`` (peft writes the trained copy, the original and the plain name, all
    resized), the pad set on the configs in memory only: an adapter folder has no config.json."""
    root = tmp_path_factory.mktemp("gpt2-modules-to-save")
    model, tokenizer = zoo.build("gpt2")
    model.save_pretrained(root / "gpt2-base")
    tokenizer.save_pretrained(root / "gpt2-base")
    model, tokenizer = zoo.build("gpt2")
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    lora = peft.LoraConfig(r=2, target_modules=["c_attn"], modules_to_save=["wte", "lm_head"], task_type="CAUSAL_LM")
    save_adapter(model, lora, root / "adapter")
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(root / "adapter")
    return root


def test_modules_to_save_adapter_loads_and_meets_its_next_finding(gpt2_modules_to_save: Path, tmp_path: Path) -> None:
    # loaded onto gpt2-base resized to 50258: what fails now is the pad the adapter folder cannot carry (the base
    # config, as saved, has none), the same TG201/TG203 tokenguard check reports, not a size mismatch
    status, row, output = run_on(tmp_path, gpt2_modules_to_save / "gpt2-base", gpt2_modules_to_save / "adapter")
    assert status == 1
    assert_no_raw_load_error(output)
    assert row == {
        "static_check": cell(
            "failed", {"TG201": "failing", "TG203": "failing", "TG210": "expected"}, [resize_note(50257, 50258)]
        ),
        "lora_training": cell("failed", {"TG101": "failing"}),
        "sft_trainer": sft_cell({"TG102": "failing"}),
        "labels_keep_eos": cell("passed"),  # a pad of its own: eos labels kept
        "save_and_reload": cell("failed", {"TG101": "failing", "TG201": "failing", "TG203": "failing", "TG210": "expected"}),
        "generation": cell("failed", {"TG201": "failing", "TG203": "failing"}),
        "character_chat_moses": cell("skipped"),
    }
    assert f"model:gpt2-base static_check: {resize_note(50257, 50258)}\n" in output


# -- checkpoints that do not load: static_check fails naming the file, the other steps skip with the reason ----------


def _fewer_rows(root: Path) -> tuple[Path, Path, str, dict[str, str]]:
    """The case's base grown to 320 rows since: the adapter's 302-row matrices would shrink it."""
    base = transformers.AutoModelForCausalLM.from_pretrained(CASE / "base")
    base.resize_token_embeddings(320, pad_to_multiple_of=64, mean_resizing=False)
    base.save_pretrained(root / "base")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(CASE / "base" / name, root / "base")
    problem = (
        f"{CASE / 'adapter-notok' / 'adapter_model.safetensors'}: the base has more rows (input embeddings 320, output "
        "head 320) than the adapter's own embedding matrices (302): the adapter was saved from another base, or this "
        "base was resized since; the suite grows a base to an adapter's rows but does not shrink one (that would drop "
        "rows 302..319): load the adapter onto the base it was saved from"
    )
    return root / "base", CASE / "adapter-notok", problem, {"TG210": "failing"}


def _other_hidden_size(root: Path) -> tuple[Path, Path, str, dict[str, str]]:
    """A 300-row base of hidden size 32: resized to 302, the adapter (hidden size 16) still does not fit."""
    config = transformers.LlamaConfig.from_pretrained(CASE / "base")
    config.hidden_size, config.intermediate_size, config.head_dim = 32, 64, 16
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(root / "base")
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(CASE / "base" / name, root / "base")
    problem = (
        f"{CASE / 'adapter-notok' / 'adapter_model.safetensors'}: the adapter does not load onto the base resized to 302 "
        "rows (PeftModel.from_pretrained): RuntimeError: Error(s) in loading state_dict for PeftModelForCausalLM:; "
    )
    return root / "base", CASE / "adapter-notok", problem, {"TG210": "expected"}


def _corrupt_pickle(root: Path) -> tuple[Path, Path, str, dict[str, str]]:
    """adapter_model.bin that is not a pickle (its rows cannot be read beforehand: no TG210)."""
    adapter = root / "adapter"
    adapter.mkdir()
    shutil.copy(CASE / "adapter-notok" / "adapter_config.json", adapter)
    (adapter / "adapter_model.bin").write_bytes(b"this is not a pickle")
    problem = f"{adapter / 'adapter_model.bin'}: the adapter does not load onto the base (PeftModel.from_pretrained): "
    return CASE / "base", adapter, problem, {}


def _no_tokenizer(root: Path) -> tuple[Path, Path, str, dict[str, str]]:
    """Tokenizer files in neither folder."""
    base = root / "base"
    base.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(CASE / "base" / name, base)
    problem = (
        f"{base}: the tokenizer does not load (AutoTokenizer.from_pretrained, no tokenizer.json or tokenizer_config.json "
        "in the checkpoint folder or the adapter folder): "
    )
    return base, CASE / "adapter-notok", problem, {}


BROKEN: dict[str, Callable[[Path], tuple[Path, Path, str, dict[str, str]]]] = {
    "fewer-rows": _fewer_rows,
    "other-hidden-size": _other_hidden_size,
    "corrupt-adapter-bin": _corrupt_pickle,
    "no-tokenizer": _no_tokenizer,
}


@pytest.mark.parametrize("make", BROKEN.values(), ids=BROKEN.keys())
def test_checkpoint_that_does_not_load_fails_static_check_and_skips_the_rest(
    tmp_path: Path, make: Callable[[Path], tuple[Path, Path, str, dict[str, str]]]
) -> None:
    (tmp_path / "made").mkdir()
    base, adapter, problem, codes = make(tmp_path / "made")
    if make is _no_tokenizer:
        try:
            transformers.AutoTokenizer.from_pretrained(base)
        except Exception:
            pass
        else:
            pytest.skip("this transformers loads a tokenizer for a folder without tokenizer files")
    status, row, output = run_on(tmp_path, base, adapter)
    assert status == 1
    assert "Traceback" not in output and "site-packages/torch" not in output, output[-4000:]
    static_check = row.pop("static_check")
    assert (static_check["outcome"], static_check["codes"]) == ("failed", codes)
    (first_line,) = [note for note in static_check["notes"] if not note.startswith("TG210: ")]
    assert first_line.startswith(problem), (first_line, problem)
    skip = f"the checkpoint does not load ({problem.split(': ', 1)[0]}): static_check says why"
    assert row == {step: cell("skipped", notes=[skip]) for step in STEPS[1:]} | {"character_chat_moses": cell("skipped")}
    # the failure says why, without a traceback; under the table, which steps skipped and why
    assert f"model:base static_check: {first_line}\n" in output
    assert f"model:base lora_training, sft_trainer, labels_keep_eos, save_and_reload, generation: {skip}\n" in output
    assert "1 failed, 6 skipped" in output


def test_fewer_rows_names_tg210_and_why_the_suite_does_not_shrink(tmp_path: Path) -> None:
    (tmp_path / "made").mkdir()
    base, adapter, problem, _ = _fewer_rows(tmp_path / "made")
    run = run_suite(tmp_path, "--tokenguard-model", str(base), "--tokenguard-adapter", str(adapter), "-k", "static_check")
    output = run.stdout + run.stderr
    assert run.returncode == 1
    assert problem in output
    assert "TG210 error: the adapter's own embedding matrices have 302 rows and the base checkpoint's 320" in output
    assert "FAILED" in output and "test_static_check[model:base] (TG210)" in output


# -- in-process: the resize decision and the table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "adapter", "plan"),
    [
        ({INPUT: 300, OUTPUT: 300}, {}, (None, None)),  # a plain LoRA adapter: nothing to resize
        ({INPUT: 300, OUTPUT: 300}, {INPUT: 302, OUTPUT: 302}, (302, None)),
        ({INPUT: 300}, {INPUT: 304, OUTPUT: 304}, (304, None)),  # tied base: its input rows stand in for the head
        ({INPUT: 300, OUTPUT: 300}, {INPUT: 302}, (302, None)),  # modules_to_save=["embed_tokens"] only
        ({INPUT: 302, OUTPUT: 302}, {INPUT: 302, OUTPUT: 302}, (None, None)),  # the base was resized already
    ],
)
def test_resize_plan_grows_the_base_to_the_adapters_rows(
    base: dict[str, int], adapter: dict[str, int], plan: tuple[int | None, str | None]
) -> None:
    assert resize_plan(base, adapter) == plan


def test_resize_plan_refuses_to_shrink_or_to_guess() -> None:
    rows, why = resize_plan({INPUT: 320}, {INPUT: 302, OUTPUT: 302})
    assert rows is None and why is not None
    assert why.startswith("the base has more rows (input embeddings 320, output head 320) than the adapter's own")
    assert "does not shrink one (that would drop rows 302..319)" in why
    rows, why = resize_plan({INPUT: 300, OUTPUT: 300}, {INPUT: 302, OUTPUT: 304})
    assert rows is None and why == (
        "the adapter's own embedding matrices disagree (input embeddings 302, output head 304): no single resize of "
        "the base fits them"
    )


def test_loading_marks_tg210() -> None:
    assert Loading().tg210 is None and Loading().notes == []
    resized = Loading(resized=(300, 302))
    assert (resized.tg210, resized.resize_to, resized.notes) == ("TG210~", 302, [resize_note(300, 302)])
    refused = Loading(problem="a/adapter_model.safetensors: no\nTG210 error: ...", rows_problem=True)
    assert (refused.tg210, refused.notes) == ("TG210!", ["a/adapter_model.safetensors: no"])
    assert refused.skip_reason == "the checkpoint does not load (a/adapter_model.safetensors): static_check says why"


def test_table_merges_every_codes_property_and_prints_notes() -> None:
    table = SuiteTable()
    props: list[tuple[str, object]] = [
        (SUITE_PROPERTY, "model:base|static_check"),
        (SUITE_CODES_PROPERTY, "TG210~"),
        (SUITE_NOTE_PROPERTY, "resized"),
        (SUITE_CODES_PROPERTY, "TG201!,TG206"),
    ]
    table.add_report(props, "passed", [])
    table.add_report(props, "failed", [])  # the call phase repeats the properties: one note
    for step in ("lora_training", "generation"):
        table.add_report([(SUITE_PROPERTY, f"model:base|{step}"), (SUITE_NOTE_PROPERTY, "does not load")], "skipped", [])
    lines = table.lines()
    assert lines[2].split() == ["model:base", "FAIL", "TG201!,TG206,TG210~", "skip", "skip"]
    assert lines[-2:] == ["model:base static_check: resized", "model:base lora_training, generation: does not load"]
    assert table.to_json()["model:base"]["static_check"] == {
        "outcome": "failed",
        "codes": {"TG201": "failing", "TG206": "static", "TG210": "expected"},
        "notes": ["resized"],
    }
