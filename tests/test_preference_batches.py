"""Every trainer shape (issue 15): the batches trl's trainers hand to ``Trainer.training_step`` are read field by field.

* differential: for each trl trainer of the *installed* trl that declares its dataset columns
  (``_set_signature_columns_if_needed``) and defines text collators, the collated batch of fake rows is built with the
  trainer's own collator, and the runtime rule (``token_fields``) must cover every 2-D integer field it emits;
* under ``--tokenguard --tokenguard-calls``: a DPO run whose completions end in eos + eos fails (TG312), the same with
  one eos passes; ORPO (``chosen_*`` / ``rejected_*`` / ``prompt_*`` fields) with an eos followed by whitespace fails;
  GRPO hands ``training_step`` raw rows (skipped with a note) and its prompts ending in eos fail at ``generate()``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="trl is not installed: the preference-trainer batches are not exercised")
pytest.importorskip("datasets", reason="datasets is not installed (trl trainers need it)")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed modules crashes, so
# everything the generated tests import is imported here first.
import torch
import transformers.trainer  # noqa: F401
import trl
from transformers import Trainer

from pytest_tokenguard import versions
from pytest_tokenguard.guard import batches
from pytest_tokenguard.static.sequences import check_fields, token_fields
from tests.warmup import import_model_modules

import_model_modules()  # before any pytester story: see tests/warmup.py

pytest_plugins = ("pytester",)

if versions.parse(trl.__version__) < versions.parse("1.0"):
    pytest.skip(f"trl {trl.__version__} builds the pre-1.0 DPO fields; these stories use trl >= 1.0", allow_module_level=True)

LIB = Path(__file__).parent / "data" / "cases" / "_lib" / "ckpt.py"


def _trainer_modules() -> list[str]:
    """Every ``*_trainer`` module of the installed trl (stable and experimental)."""
    names: list[str] = []
    for package in ("trl.trainer", "trl.experimental"):
        try:
            root = importlib.import_module(package)
        except ImportError:
            continue
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            if info.name.rsplit(".", 1)[-1].endswith("_trainer"):
                names.append(info.name)
    return names


def _is_int_2d(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 2 and not value.is_floating_point() and value.dtype != torch.bool


def discovered() -> dict[str, tuple[list[str], dict[str, Any]]]:
    """trainer class name -> (its signature columns, {collator name: the batch it builds from fake rows})."""
    found: dict[str, tuple[list[str], dict[str, Any]]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated aliases (trl.experimental.kto) warn on import
        for name in _trainer_modules():
            try:
                module = importlib.import_module(name)
            except Exception:  # optional dependencies (vllm, liger, ...) of some experimental trainers
                continue
            for cls in [v for v in vars(module).values() if isinstance(v, type) and v.__module__ == name]:
                if not issubclass(cls, Trainer) or "_set_signature_columns_if_needed" not in cls.__dict__:
                    continue
                bare: Any = object.__new__(cls)
                bare._signature_columns = None
                bare._is_vision_dataset = False
                try:
                    cls._set_signature_columns_if_needed(bare)
                except Exception:
                    continue
                columns: list[str] = [c for c in bare._signature_columns or [] if isinstance(c, str)]
                id_columns = [c for c in columns if c.endswith("_ids")]
                collated: dict[str, Any] = {}
                for collator_name, collator in vars(module).items():
                    if not (isinstance(collator, type) and "Collator" in collator_name and collator.__module__ == name):
                        continue
                    if "Vision" in collator_name or not id_columns:
                        continue
                    if "pad_token_id" not in inspect.signature(collator).parameters:
                        continue
                    row: dict[str, Any] = {c: [5, 6, 7] for c in id_columns}
                    if "label" in columns:
                        row["label"] = True
                    short = {c: [5] for c in id_columns} | ({"label": False} if "label" in columns else {})
                    try:
                        collated[collator_name] = collator(pad_token_id=0)([row, short])
                    except Exception as error:  # a collator that needs more than these rows
                        collated[collator_name] = error
                if collated:
                    found[cls.__name__] = (columns, collated)
    return found


@pytest.fixture(scope="module")
def trainers() -> dict[str, tuple[list[str], dict[str, Any]]]:
    return discovered()


def test_discovery_finds_the_preference_trainers(trainers: dict[str, tuple[list[str], dict[str, Any]]]) -> None:
    assert "DPOTrainer" in trainers, sorted(trainers)
    assert any(name in trainers for name in ("KTOTrainer", "RewardTrainer")), sorted(trainers)
    columns, collated = trainers["DPOTrainer"]
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(columns)
    assert collated, "DPO defines a text collator"


def test_runtime_rule_covers_every_2d_integer_field_each_collator_emits(
    trainers: dict[str, tuple[list[str], dict[str, Any]]],
) -> None:
    checked = 0
    for trainer, (_, collated) in sorted(trainers.items()):
        for collator, batch in collated.items():
            if isinstance(batch, Exception):
                continue
            emitted = {key for key, value in batch.items() if _is_int_2d(value)}
            fields = token_fields(batch)
            covered = {key for roles in fields.values() for key in roles.values()}
            assert emitted <= covered, f"{trainer} / {collator}: {sorted(emitted - covered)} not read by the guard"
            assert "label" not in covered  # KTO's 1-D desirable flag is no token field
            for prefix, roles in fields.items():
                if "completion_mask" in roles:  # trl's loss: labels = ids where the completion mask is 1
                    assert "completion_mask" in roles and roles["input_ids"] == prefix + "input_ids"
            reports = check_fields(batch)  # no tokenizer, no model: runs, finds only what needs no ids
            assert set(reports) == set(fields)
            checked += 1
    assert checked >= 2


def test_kto_label_flag_is_not_a_token_field() -> None:
    batch = {
        "input_ids": torch.tensor([[1, 5, 2], [1, 6, 2]]),
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 1, 1], [0, 1, 1]]),
        "KL_input_ids": torch.tensor([[1, 6, 2], [1, 5, 2]]),
        "KL_attention_mask": torch.ones(2, 3, dtype=torch.long),
        "KL_completion_mask": torch.tensor([[0, 1, 1], [0, 1, 1]]),
        "label": torch.tensor([True, False]),
    }
    assert token_fields(batch) == {
        "": {"input_ids": "input_ids", "attention_mask": "attention_mask", "completion_mask": "completion_mask"},
        "KL_": {"input_ids": "KL_input_ids", "attention_mask": "KL_attention_mask", "completion_mask": "KL_completion_mask"},
    }


# --- the trainers under the guard --------------------------------------------------------------------------------

RUNS = '''
import copy, sys
sys.path.insert(0, "_lib")
import torch
from ckpt import tiny_tokenizer
from datasets import Dataset
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

SPECIALS = {0: "<unk>", 1: "<s>", 2: "</s>"}


def build(appends_eos=False):
    """Llama-2 layout (<unk> 0 = pad, <s> 1, </s> 2); ``appends_eos``: the tokenizer appends eos to every text"""
    tok = tiny_tokenizer(SPECIALS, 320, bos="<s>", eos="</s>", unk="<unk>", pad="<unk>", post_bos="<s>",
                         post_eos="</s>" if appends_eos else None)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=320, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, bos_token_id=1,
                                         eos_token_id=2, pad_token_id=0))
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return model, tok


def one_step(**kw):
    return dict(output_dir=kw.pop("output_dir"), max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                disable_tqdm=True, save_strategy="no", logging_steps=1, bf16=False, **kw)


PAIRS = [{"prompt": "Q: hi?", "chosen": " A: yes.</s>", "rejected": " A: no.</s>"},
         {"prompt": "Q: bye?", "chosen": " A: ok.</s>", "rejected": " A: nope</s>"}]


def dpo(tmp_path, appends_eos):
    from trl import DPOConfig, DPOTrainer
    model, tok = build(appends_eos)
    args = DPOConfig(**one_step(output_dir=str(tmp_path), max_length=64))
    DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(PAIRS),
               processing_class=tok).train()


def test_dpo_tokenizer_appends_eos_to_completions_ending_in_eos(tmp_path):
    dpo(tmp_path, appends_eos=True)     # trl keeps the completion's </s>, the tokenizer appends another


def test_dpo_single_eos(tmp_path):
    dpo(tmp_path, appends_eos=False)


def orpo(tmp_path, chosen_end):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    model, tok = build()
    rows = [{"prompt": "Q: hi?", "chosen": " A: yes." + chosen_end, "rejected": " A: no."},
            {"prompt": "Q: bye?", "chosen": " A: ok." + chosen_end, "rejected": " A: nope"}]
    args = ORPOConfig(**one_step(output_dir=str(tmp_path), max_length=64))
    ORPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok).train()


def test_orpo_eos_then_newline_in_the_data(tmp_path):
    orpo(tmp_path, "</s>\\n")   # the last id is not eos, so trl appends one: </s> newline </s>


def test_orpo_completions_without_eos_text(tmp_path):
    orpo(tmp_path, "")


def grpo(tmp_path, prompts):
    from trl import GRPOConfig, GRPOTrainer
    model, tok = build()
    args = GRPOConfig(**one_step(output_dir=str(tmp_path), num_generations=2, max_completion_length=4))
    GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [float(len(c)) for c in completions], args=args,
                train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]), processing_class=tok).train()


def test_grpo_prompts_ending_in_eos(tmp_path, tokenguard):
    grpo(tmp_path, ["Q: hi?</s>", "Q: bye?</s>"])


def test_grpo_prompts(tmp_path, tokenguard):
    grpo(tmp_path, ["Q: hi?", "Q: bye?"])
    print("CALL NOTES", tokenguard._recorder.observations.get("call_notes"))
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Import what the generated tests import lazily, outside pytester (see the module imports)."""
    for name in ("datasets", "trl.trainer.dpo_trainer", "trl.trainer.grpo_trainer", "trl.experimental.orpo"):
        try:
            importlib.import_module(name)
        except ImportError:  # ORPO is experimental: absent from some trl releases
            pass


def test_preference_and_online_trainers_under_the_guard(pytester: pytest.Pytester, runs: None) -> None:
    try:
        importlib.import_module("trl.experimental.orpo")
        has_orpo = True
    except ImportError:
        has_orpo = False
    (pytester.path / "_lib").mkdir()
    (pytester.path / "_lib" / "ckpt.py").write_text(LIB.read_text(encoding="utf-8"), encoding="utf-8")
    pytester.makepyfile(test_runs=RUNS)
    args = ["--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider", "-p", "no:randomly", "-s"]
    if not has_orpo:
        args += ["-k", "not orpo"]
    result = pytester.runpytest_inprocess(*args)
    result.assert_outcomes(failed=3 if has_orpo else 2, passed=3 if has_orpo else 2)
    # DPO: rows 0-1 are prompt + chosen, rows 2-3 prompt + rejected; the field is input_ids + completion_mask
    result.stdout.fnmatch_lines(
        [
            "TG312 a preference completion ends in a doubled eos, or without eos",
            "  message: rows [[]0, 1, 2, 3[]] end the completion with eos 2 '</s>' twice (row 0 at positions [[]15, 16[]]; "
            "row 1 at positions [[]15, 16[]]; row 2 at positions [[]14, 15[]]; row 3 at positions [[]16, 17[]]): the model "
            "is trained to emit an end after the end [[]at DPOTrainer.training_step() batch 1[]]",
            "  fix:     end every chosen / rejected / completion with one eos: *",
        ]
    )
    if has_orpo:  # ORPO: chosen_* / rejected_* / prompt_* fields, explicit labels; only the chosen rows are doubled
        result.stdout.fnmatch_lines(
            [
                "TG312 a preference completion ends in a doubled eos, or without eos",
                "  message: rows [[]0, 1[]] end the completion with eos 2 '</s>' twice (row 0 at positions [[]*[]] ('\\n' "
                "between); row 1 at positions [[]*[]] ('\\n' between)): * [[]at ORPOTrainer.training_step() batch 1, "
                "chosen_input_ids[]]",
            ]
        )
    # GRPO: training_step gets raw rows (noted); the prompts reach generate() without a tokenizer kwarg, and the
    # trainer's tokenizer names the ids
    result.stdout.fnmatch_lines(
        [
            "TG302 a generation prompt ends in eos or the chat end of turn",
            "  message: rows [[]0, 1[]] end in eos 2 '</s>' (row 0 at position *; row 1 at position *): generation starts "
            "after the end of a sequence [[]at generate()[]]",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "CALL NOTES [[]'GRPOTrainer.training_step(): the batch is a list of 2 raw rows, not token ids (an online "
            "trainer generates from it): skipped; its prompts are checked at generate()'[]]"
        ]
    )
    failed = [
        "FAILED test_runs.py::test_dpo_tokenizer_appends_eos_to_completions_ending_in_eos (*TG312*)",
        "FAILED test_runs.py::test_grpo_prompts_ending_in_eos (TG302)",
    ]
    if has_orpo:
        failed.append("FAILED test_runs.py::test_orpo_eos_then_newline_in_the_data (*TG312*)")  # node-id order
    result.stdout.fnmatch_lines(failed)
    assert "GRPOTrainer.training_step()" in " ".join(batches.notes())
