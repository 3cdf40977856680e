"""The bundled regression suite: ``pytest --tokenguard --pyargs pytest_tokenguard.suite``.

Per subject (each zoo family, or your checkpoint with ``--tokenguard-model``): static check, LoRA
training, labels keep EOS, save and reload, generation; plus the character-chat regression on the
Qwen3-0.6B layout. Zoo families expect exactly their documented behaviour; a user checkpoint expects
nothing: any TG1xx and any error-severity TG2xx fails the step that met it. An adapter whose own embedding
matrices have more rows than the base is loaded onto the base resized to them, as a user must (TG210 allowed,
and noted); a checkpoint that does not load fails static_check naming the file, and the other steps skip.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_tokenguard import align_special_tokens, check_batch, check_special_tokens, generation_config_for
from pytest_tokenguard.cli import main as tokenguard_cli
from pytest_tokenguard.guard import calls
from pytest_tokenguard.static.checks import TokenAlignmentError
from pytest_tokenguard.static.layout import FIELDS, valid_ids
from pytest_tokenguard.static.objects import base_model
from pytest_tokenguard.suite import support
from pytest_tokenguard.suite.expected import EXPECTED
from pytest_tokenguard.suite.table import SUITE_CODES_PROPERTY, SUITE_NOTE_PROPERTY, SUITE_PROPERTY

pytestmark = pytest.mark.tokenguard  # guarded even without --tokenguard


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "family" in metafunc.fixturenames:
        names = support.subject_names(metafunc.config.getoption("tokenguard_model"))
        if metafunc.function.__name__ == "test_character_chat_moses":
            names = [name for name in names if name == "qwen3-0.6b"] or names
        metafunc.parametrize("family", names)


@pytest.fixture
def step(family: str, request: pytest.FixtureRequest) -> str:
    """This test's cell of the summary table (family x step): the step's name."""
    name: str = request.function.__name__.removeprefix("test_")
    request.node.user_properties.append((SUITE_PROPERTY, f"{family}|{name}"))
    return name


@pytest.fixture
def loading(family: str, step: str, request: pytest.FixtureRequest) -> support.Loading | None:
    """How the user's checkpoint loaded (the resize its adapter needed, or why it does not load); None for the zoo."""
    if not family.startswith(support.USER_PREFIX):
        return None
    config = request.config
    return support.user_loading(config.getoption("tokenguard_model"), config.getoption("tokenguard_adapter"))


@pytest.fixture
def subject(family: str, step: str, loading: support.Loading | None, request: pytest.FixtureRequest) -> support.Subject:
    """Fresh copies of the family's (or your checkpoint's) model and tokenizer. Where your checkpoint does not
    load, the static_check step fails with the reason and every step that needs it is skipped, saying why."""
    if loading is not None and loading.problem is not None:
        note(request, loading.skip_reason)
        pytest.skip(loading.skip_reason)
    config = request.config
    return support.load_subject(family, config.getoption("tokenguard_model"), config.getoption("tokenguard_adapter"))


def note_codes(
    request: pytest.FixtureRequest, codes: Sequence[str], failing: Sequence[str] = (), allowed: Sequence[str] = ()
) -> None:
    """Static codes for the summary table, ``!`` marking failing ones and ``~`` allowed ones (the suite handled them
    as a user must); runtime codes come from the guard."""
    marked = {code: code for code in codes} | {code: code + "~" for code in allowed} | {code: code + "!" for code in failing}
    if marked:
        request.node.user_properties.append((SUITE_CODES_PROPERTY, ",".join(sorted(marked.values()))))


def note(request: pytest.FixtureRequest, text: str) -> None:
    """A line the summary prints under the table for this step (``"notes"`` in the JSON report)."""
    request.node.user_properties.append((SUITE_NOTE_PROPERTY, text))


def require_no_errors(request: pytest.FixtureRequest, model: Any, tokenizer: Any, generation_config: Any = None) -> None:
    report = check_special_tokens(model, tokenizer, generation_config)
    note_codes(request, [f.code for f in report.findings], [f.code for f in report.errors])
    if report.errors:
        raise TokenAlignmentError(report, report.errors)


def test_static_check(family: str, loading: support.Loading | None, tokenguard: Any, request: pytest.FixtureRequest) -> None:
    """1. The layout as shipped: exactly the documented findings (zoo); no error finding (your checkpoint). With an
    adapter that carries its own embedding matrices: TG210, the base resized to their rows (``TG210~``), or where no
    resize makes it load, the failure (``TG210!``). Any other load failure of your files fails here, naming the file."""
    if loading is not None:
        if loading.tg210 == "TG210~":
            note_codes(request, [], allowed=["TG210"])
        elif loading.tg210 is not None:
            note_codes(request, ["TG210"], ["TG210"] if loading.tg210 == "TG210!" else [])
        for line in loading.notes:
            note(request, line)
        if loading.problem is not None:
            pytest.fail(loading.problem, pytrace=False)
    subject: support.Subject = request.getfixturevalue("subject")
    tokenguard.snapshot(subject.model, subject.tokenizer, name="as shipped")
    if subject.is_user_checkpoint:
        require_no_errors(request, subject.model, subject.tokenizer)
        return
    report = check_special_tokens(subject.model, subject.tokenizer)
    note_codes(request, [f.code for f in report.findings])
    found = {(f.code, f.field, f.severity) for f in report.findings}
    assert found == EXPECTED[subject.name]["findings"], str(report)


@contextlib.contextmanager
def expecting_trainer_updates(tokenguard: Any, expected: dict[str, Any]) -> Iterator[None]:
    """Training must log TG101 with exactly ``expected`` (or no TG101 when it is empty)."""
    if not expected:
        yield
        return
    # identical records are counted, not repeated: "logged in this block" is a new record or a higher count
    counts = {id(f): f.count for f in tokenguard.records}
    with tokenguard.expect("TG101"):
        yield
    logged = [f.details.get("updated_tokens") for f in tokenguard.records if f.code == "TG101" and f.count > counts.get(id(f), 0)]
    assert logged and all(value == expected for value in logged), f"predicted {expected}, logged {logged}"


def test_lora_training(subject: support.Subject, tokenguard: Any, tmp_path: Path) -> None:
    """2. Trainer + peft LoRA, 2 steps. Raw layout: TG101 exactly when predicted. Aligned: no TG1xx."""
    model, tokenizer = subject.model, subject.tokenizer
    support.usual_setup(tokenizer)
    if subject.is_user_checkpoint:  # nothing expected: any finding fails this step
        support.train(model, tokenizer, tmp_path, steps=1)
        return
    expected = support.expected_trainer_updates(model, tokenizer, calls.synthesizing())
    with expecting_trainer_updates(tokenguard, expected):
        support.train(model, tokenizer, tmp_path / "raw")

    aligned = support.load_subject(subject.name)
    support.usual_setup(aligned.tokenizer)
    align_special_tokens(aligned.model, aligned.tokenizer)
    residual = residual_updates(aligned, tokenguard)
    with expecting_trainer_updates(tokenguard, residual):
        support.train(aligned.model, aligned.tokenizer, tmp_path / "aligned")
    tokenguard.assert_clean()  # the expected TG101 above stays expected; anything else fails


def residual_updates(aligned: support.Subject, tokenguard: Any) -> dict[str, Any]:
    """What the Trainer still logs after align_special_tokens: nothing from 5.18 on. transformers 4.56-5.17
    have two known bugs no alignment can avoid: they write the tokenizer's None over a config id it does
    not define (Qwen's bos; align_special_tokens refuses to write None), and they always "update" an eos
    declared as a list (Gemma's [1, 107]) because an int never equals a list. Those residuals are expected
    there, and nothing else."""
    residual = support.expected_trainer_updates(aligned.model, aligned.tokenizer, calls.synthesizing())
    config_eos = base_model(aligned.model).config.eos_token_id
    for name, value in residual.items():
        list_collapse = name == "eos_token_id" and isinstance(config_eos, list) and value in config_eos
        assert value is None or list_collapse, f"align_special_tokens left {residual}"
    tokenguard.observe("residual_trainer_updates", residual)
    return residual


def test_sft_trainer(subject: support.Subject, tokenguard: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """6. trl's ``SFTTrainer`` (when trl is installed), 1 step on the chat-formatted training texts: the layout as
    fixed (aligned, a pad of its own where pad = eos is the only stop) gives no TG102 and no TG101 but the known
    residuals; your checkpoint as shipped: any finding fails this step."""
    pytest.importorskip("trl", reason="trl is not installed (the test extra: pip install 'pytest-tokenguard[test]')")
    pytest.importorskip(
        "trl",
        minversion=support.SFT_TRL,
        reason=f"this step checks trl >= {support.SFT_TRL}'s SFTTrainer (SFTConfig(max_length=...); the pad it mirrors "
        "onto the model in __init__, TG102)",
    )
    datasets = pytest.importorskip("datasets", reason="datasets is not installed (trl's SFTTrainer needs it)")
    import huggingface_hub.constants
    from trl.trainer.sft_trainer import SFTTrainer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)  # no usage report to the hub
    model, tokenizer = subject.model, subject.tokenizer
    support.usual_setup(tokenizer)
    residual: dict[str, Any] = {}
    if not subject.is_user_checkpoint:
        support.align_with_own_pad(model, tokenizer)
        residual = residual_updates(subject, tokenguard)
    dataset = datasets.Dataset.from_list([{"text": text} for text in support.training_texts(tokenizer)])
    args = support.sft_config(tmp_path)
    with expecting_trainer_updates(tokenguard, residual):
        SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer).train()
    assert "TG102" not in {f.code for f in tokenguard.records}


def test_labels_keep_eos(subject: support.Subject, tokenguard: Any, request: pytest.FixtureRequest) -> None:
    """3. DataCollatorForLanguageModeling masks pad in the labels: where pad is an eos id, EOS goes too."""
    model, tokenizer = subject.model, subject.tokenizer
    support.usual_setup(tokenizer)
    eos_ids = valid_ids(tokenizer.eos_token_id)
    trap = tokenizer.pad_token_id in eos_ids
    raw = support.eos_labels(tokenizer, eos_ids)
    tokenguard.observe("eos_labels", {"pad_is_eos": trap, "kept": raw.kept, "masked": raw.masked})
    assert raw.kept + raw.masked > 0, "the training texts end with eos"
    # the sequence view of the same batch: TG303 when every eos *and* end-of-turn position is masked (a family
    # whose chat end of turn is not the pad, Qwen3-base and Phi-3, still learns to end turns)
    seen = [code for code in check_batch(raw.batch, tokenizer, model, purpose="train").codes() if code == "TG303"]
    assert not seen or raw.kept == 0, raw
    if trap:
        codes = ["TG206", *seen]
        note_codes(request, codes, codes if subject.is_user_checkpoint else [])
    if subject.is_user_checkpoint:
        assert raw.masked == 0, (
            f"TG206: pad {tokenizer.pad_token_id} is the eos id, so {raw.masked} EOS label(s) were masked to -100 "
            f"and the model never learns to stop; fix: add a dedicated pad token, e.g. "
            f"pytest_tokenguard.suite.support.add_dedicated_pad(model, tokenizer)"
        )
        return
    if trap:
        assert raw.masked > 0 and raw.kept == 0, raw
        support.add_dedicated_pad(model, tokenizer)
        fixed = support.eos_labels(tokenizer, eos_ids)
        assert fixed.masked == 0 and fixed.kept == raw.masked, fixed
        assert "TG303" not in check_batch(fixed.batch, tokenizer, model, purpose="train").codes()
    else:
        assert raw.masked == 0, raw


def test_save_and_reload(subject: support.Subject, tokenguard: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """4. Train, save base + adapter + tokenizer, reload with PeftModel.from_pretrained: ids survive, no null
    over an int id, ``tokenguard check`` passes on the saved folders. Your adapter with its own embedding matrices
    (TG210, the base resized in static_check): saved with them, reloaded onto your base resized the same way, and
    the check's TG210 allowed (``TG210~``)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = subject.model, subject.tokenizer
    support.usual_setup(tokenizer)
    if not subject.is_user_checkpoint and support.align_with_own_pad(model, tokenizer):
        note_codes(request, ["TG206"])
    adapter_dir = tmp_path / "adapter"
    if subject.path is not None:  # your checkpoint: reload onto your own files
        base_dir = subject.path
    else:
        base_dir = tmp_path / "base"
        base_model(model).save_pretrained(base_dir)
    pristine = support.object_ids(model)
    residual = {} if subject.is_user_checkpoint else residual_updates(subject, tokenguard)
    with expecting_trainer_updates(tokenguard, residual):
        trained = support.train(model, tokenizer, tmp_path / "run", steps=1)
    # your adapter carried its own embedding matrices (the base was resized to them): saved with them again
    resize_to = subject.loading.resize_to if subject.loading is not None else None
    trained.save_pretrained(adapter_dir, **({"save_embedding_layers": True} if resize_to is not None else {}))
    tokenizer.save_pretrained(adapter_dir)
    after_dir = tmp_path / "after-training"  # what a user persists after training: the base config too
    base_model(trained).config.save_pretrained(after_dir)
    if getattr(base_model(trained), "generation_config", None) is not None:
        base_model(trained).generation_config.save_pretrained(after_dir)
    saved_after = support.saved_ids(after_dir)
    tokenguard.observe("saved_ids_after_training", saved_after)
    # no null over an int id, except the None the installed Trainer is known to write (expected above)
    known = {("config.json", name.removesuffix("_token_id")) for name, value in residual.items() if value is None}
    known |= {("generation_config.json", field) for _, field in known}
    nulls = [problem for where, problem in support.nulls_over_ints(pristine, saved_after) if where not in known]
    assert not nulls, nulls

    # tokenguard check passes; TG210 only where the suite resized your base (static_check notes it): the saved
    # adapter still needs a base of its rows, and the check still tells whoever loads the pair so
    allowed = {"TG210"} if resize_to is not None else set()
    findings = folder_findings(base_dir, adapter_dir)
    failing = [f for f in findings if f["severity"] == "error" and f["code"] not in allowed]
    note_codes(request, [], [f["code"] for f in failing], sorted(allowed & {f["code"] for f in findings}))
    assert not failing, "\n".join(f"tokenguard check: {f['code']} error: {f['message']}\n    fix: {f['hint']}" for f in failing)

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    if resize_to is not None:
        support.resize_base(base, resize_to)  # as every user of the adapter must
    reloaded = PeftModel.from_pretrained(base, adapter_dir)
    if resize_to is not None:  # the trained embedding matrices came back with the adapter
        assert set(support.embedding_rows(reloaded).values()) == {resize_to}, support.embedding_rows(reloaded)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    assert support.object_ids(reloaded) == pristine  # the base was saved before training
    assert [reloaded_tokenizer.bos_token_id, reloaded_tokenizer.eos_token_id, reloaded_tokenizer.pad_token_id] == [
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    ]
    require_no_errors(request, reloaded, reloaded_tokenizer)


def folder_findings(base_dir: Path, adapter_dir: Path) -> list[dict[str, Any]]:
    """``tokenguard check BASE --adapter ADAPTER --format json``: its findings."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = tokenguard_cli(["check", str(base_dir), "--adapter", str(adapter_dir), "--format", "json"])
    if status not in (0, 1):  # a folder it cannot read: the message names the file
        pytest.fail(f"tokenguard check {base_dir} --adapter {adapter_dir}: {err.getvalue().strip()}", pytrace=False)
    findings: list[dict[str, Any]] = json.loads(out.getvalue())["findings"]
    return findings


def _generate(
    model: Any, tokenizer: Any, generation_config: Any, *, stop_at: list[int] | None = None, **kwargs: Any
) -> tuple[Any, int]:
    """Batched left-padded chat prompts; with ``stop_at``, row i emits the end of turn as its new token
    ``stop_at[i]`` (and no stop id before it)."""
    import torch
    from transformers import LogitsProcessorList

    batch = support.encode_prompts(tokenizer)
    prompt_length = batch["input_ids"].shape[1]
    if stop_at is not None:
        end_of_turn = support.end_of_turn_id(tokenizer)
        assert end_of_turn is not None
        stops = sorted({*valid_ids(generation_config.eos_token_id), end_of_turn})
        force = support.force_token_processor(end_of_turn, stop_at, prompt_length, stops)
        kwargs["logits_processor"] = LogitsProcessorList([force])
    torch.manual_seed(0)
    output = model.generate(**batch, generation_config=generation_config, **kwargs)
    return output, prompt_length


def test_generation(subject: support.Subject, tokenguard: Any, request: pytest.FixtureRequest) -> None:
    """5. Batched left-padded chat prompts: no TG1xx; a forced end of turn stops the row, the rest is pad;
    deliberate right padding is reported as TG113."""
    model, tokenizer = subject.model, subject.tokenizer
    model.eval()
    if subject.is_user_checkpoint:  # the checkpoint as shipped, short outputs
        support.usual_setup(tokenizer)  # batched prompts need a pad token to pad with
        config = copy_config(model.generation_config, max_new_tokens=8, do_sample=False)
        require_no_errors(request, model, tokenizer, config)
        _generate(model, tokenizer, config)
        return
    support.usual_setup(tokenizer)
    if support.align_with_own_pad(model, tokenizer):
        note_codes(request, ["TG206"])
    config = generation_config_for(model, tokenizer, **support.APP_SAMPLING)
    require_no_errors(request, model, tokenizer, config)
    end_of_turn = support.end_of_turn_id(tokenizer)
    assert end_of_turn is not None and end_of_turn in valid_ids(config.eos_token_id)
    at_steps = [6, 9, 12]
    output, prompt_length = _generate(model, tokenizer, config, stop_at=at_steps)
    new = output[:, prompt_length:]
    tokenguard.observe(
        "generation",
        {
            "ids": {key: getattr(config, f"{key}_token_id") for key in FIELDS},
            "stopped_at": [
                [int(token) for token in row].index(end_of_turn) if end_of_turn in row else None for row in new.tolist()
            ],
        },
    )
    assert new.shape[1] == max(at_steps) + 1, "generation ends when the last row reaches its end of turn"
    for row, at in enumerate(at_steps):
        assert int(new[row, at]) == end_of_turn
        assert all(int(token) == config.pad_token_id for token in new[row, at + 1 :]), new[row].tolist()

    with tokenguard.expect("TG113"):  # deliberate right padding
        batch = support.encode_prompts(tokenizer, side="right")
        model.generate(**batch, generation_config=copy_config(config, max_new_tokens=1, min_new_tokens=0))


def copy_config(config: Any, **changes: Any) -> Any:
    import copy

    new = copy.deepcopy(config)
    for key, value in changes.items():
        setattr(new, key, value)
    return new


def test_character_chat_moses(family: str, step: str, tokenguard: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """6. The character-chat app: a "moses" adapter on the Qwen3-0.6B layout. Its own fix (generation ids
    copied from the base config) against the real fix (align_special_tokens + generation_config_for)."""
    if family != "qwen3-0.6b":  # (your checkpoint's name starts with "model:")
        pytest.skip("the character-chat scenario runs on the zoo's qwen3-0.6b layout")
    subject: support.Subject = request.getfixturevalue("subject")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, GenerationConfig

    seen: dict[str, Any] = {}
    # -- the app as it is: train on the raw layout, load base + adapter, ids copied from the base config
    model, tokenizer = subject.model, subject.tokenizer
    expected = support.expected_trainer_updates(model, tokenizer, calls.synthesizing())
    with expecting_trainer_updates(tokenguard, expected):
        moses = support.train(model, tokenizer, tmp_path / "app-run")  # the Trainer still aligns pad
    seen["app training TG101"] = expected
    moses.save_pretrained(tmp_path / "moses")
    tokenizer.save_pretrained(tmp_path / "moses")
    tokenguard.clear()

    base = support.load_subject("qwen3-0.6b").model  # the base as downloaded
    character = PeftModel.from_pretrained(base, tmp_path / "moses")
    ids = {f"{key}_token_id": getattr(base.config, f"{key}_token_id") for key in ("bos", "pad", "eos")}
    app_config = GenerationConfig(**support.APP_SAMPLING, **ids)  # type: ignore[no-untyped-call]
    assert app_config.pad_token_id is None, "the app copies pad None from the base config"
    app_report = check_special_tokens(character, tokenizer, app_config)
    assert ("TG203", "pad") in {(f.code, f.field) for f in app_report.errors}, str(app_report)
    seen["app generation config"] = [f"{f.code} {f.field}" for f in app_report.errors]
    character.eval()
    _generate(character, tokenizer, app_config, stop_at=[8, 8, 8])
    app_codes = sorted({f.code for f in tokenguard.records if not f.expected})  # whatever this version says
    seen["app generation emits"] = app_codes or "nothing"
    tokenguard.clear()  # observed, not judged: this half shows what the app's fix leaves

    # -- the real fix: align before training, generation config from the model and tokenizer
    fixed = support.load_subject("qwen3-0.6b")
    align_special_tokens(fixed.model, fixed.tokenizer)
    base_dir, adapter_dir = tmp_path / "fixed-base", tmp_path / "fixed-moses"
    fixed.model.save_pretrained(base_dir)
    with expecting_trainer_updates(tokenguard, residual_updates(fixed, tokenguard)):
        trained = support.train(fixed.model, fixed.tokenizer, tmp_path / "fixed-run")
    tokenguard.assert_clean()
    trained.save_pretrained(adapter_dir)
    fixed.tokenizer.save_pretrained(adapter_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        assert tokenguard_cli(["check", str(base_dir), "--adapter", str(adapter_dir)]) == 0
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)
    reloaded.eval()
    config = generation_config_for(reloaded, fixed.tokenizer, **support.APP_SAMPLING)
    assert check_special_tokens(reloaded, fixed.tokenizer, config).ok
    _generate(reloaded, fixed.tokenizer, config, stop_at=[8, 8, 8])
    tokenguard.assert_clean()
    seen["real fix"] = "clean: training, save/reload, tokenguard check, generation"
    for key, value in seen.items():
        request.node.user_properties.append((f"character_chat: {key}", str(value)))
    tokenguard.observe("character_chat", seen)
    note_codes(request, [*(["TG101"] if expected else []), *app_report.codes(), *app_codes])
