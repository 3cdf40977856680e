"""Embedding rows from safetensors headers in the folder check: the base's (single file or shards), replaced by a
peft adapter's where it carries its own embedding matrices; TG210 when they differ from the base's.

The real case (tests/data/cases/adapter-resized-embeddings, README there), the modules-to-save case (GPT-2,
built here as its reproduction does), siblings (a sharded tied Qwen2 base, LoRA on the embeddings, trainable
tokens), what ``PeftModel.from_pretrained`` really does with each, agreement with ``check_special_tokens`` on the
loaded objects, and the header reader against the safetensors library. Damaged weights (truncated, oversized or
non-JSON headers, missing or corrupt adapter weights, bad shard indexes) are in the bad-input corpus of test_cli.py."""

from __future__ import annotations

import inspect
import json
import pickle
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_tokenguard.static.api import check_special_tokens
from pytest_tokenguard.static.checks import check_layout
from pytest_tokenguard.static.folder import read_folder
from pytest_tokenguard.static.layout import TokenLayout
from pytest_tokenguard.static.safetensors_header import TensorInfo, read_header
from pytest_tokenguard.suite import zoo
from tests.test_cli import SHARD, header_bytes, run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

CASE = Path(__file__).resolve().parent / "data" / "cases" / "adapter-resized-embeddings"
INPUT, OUTPUT = "input_embeddings", "output_embeddings"


def check_json(capsys: pytest.CaptureFixture[str], base: Path, adapter: Path | None = None) -> tuple[int, dict[str, Any]]:
    argv: list[Any] = ["check", base, "--format", "json"]
    if adapter is not None:
        argv += ["--adapter", adapter]
    run = run_cli(capsys, *argv)
    assert run.err == "", run.err
    return run.rc, run.json()


def codes(findings: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(f["code"], f["severity"]) for f in findings}


def without_tg210(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f["code"] != "TG210"]


def object_findings(model: Any, tokenizer: Any) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = check_special_tokens(model, tokenizer).to_dict()["findings"]
    return findings


def load_adapter(base: Any, adapter: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes on tied weights
        return peft.PeftModel.from_pretrained(base, adapter)


def from_pretrained(path: Path) -> Any:
    return transformers.AutoModelForCausalLM.from_pretrained(path)


def tokenizer_of(path: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(path)


def resize(model: Any, rows: int) -> Any:
    model.resize_token_embeddings(rows, mean_resizing=False)
    return model


# -- the real case: adapter saved after adding 2 tokens and resizing to 302; base left at 300 --------------------

TG210_HINT_302 = "resize the base to 302 before PeftModel.from_pretrained (model.resize_token_embeddings(302))"


def tg210(findings: list[dict[str, Any]]) -> dict[str, Any]:
    found = [f for f in findings if f["code"] == "TG210"]
    assert len(found) == 1, findings
    return found[0]


def test_case_adapter_without_tokenizer_fails_naming_the_rows_and_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    # before: exit 0 (the rows were never read and the base's tokenizer fits the base)
    rc, data = check_json(capsys, CASE / "base", CASE / "adapter-notok")
    assert rc == 1 and data["exit_code"] == 1
    # no TG204/TG205; TG215: the case's reduced tokenizer.json encodes without <s> (its post-processor adds nothing)
    assert codes(data["findings"]) == {("TG207", "warning"), ("TG210", "error"), ("TG215", "warning")}
    finding = tg210(data["findings"])
    assert finding["field"] == "vocab"
    assert finding["values"] == {"adapter": {INPUT: 302, OUTPUT: 302}, "base": {INPUT: 300, OUTPUT: 300}}
    assert finding["message"] == (
        "the adapter's own embedding matrices have 302 rows and the base checkpoint's 300 (input embeddings 302 vs "
        "300, output head 302 vs 300): loading the adapter onto this base (PeftModel.from_pretrained) fails with a "
        "size mismatch"
    )
    assert finding["hint"] == TG210_HINT_302
    layout = data["layout"]
    assert (layout["embedding_rows"], layout["vocab_size"], layout["tokenizer_length"]) == (302, 300, 300)
    assert (layout["base_rows"], layout["adapter_rows"]) == ({INPUT: 300, OUTPUT: 300}, {INPUT: 302, OUTPUT: 302})
    assert data["files"][-2:] == [
        str(CASE / "base" / "model.safetensors"),
        str(CASE / "adapter-notok" / "adapter_model.safetensors"),
    ]

    text = run_cli(capsys, "check", CASE / "base", "--adapter", CASE / "adapter-notok")
    assert text.rc == 1
    assert (
        "vocab: config vocab_size 300, embedding rows 302 (the adapter's; base checkpoint 300), tokenizer length 300" in text.out
    )
    assert f"TG210 error: {finding['message']}\n    fix: {TG210_HINT_302}\n" in text.out
    assert text.out.endswith("FAIL: 1 error(s), 2 warning(s)\n")


def test_case_adapter_with_tokenizer_has_no_false_tg204_tg205(capsys: pytest.CaptureFixture[str]) -> None:
    # before: TG205 (302 tokens > 300 rows), though the loaded model has 302 rows, and no word of the failing load
    rc, data = check_json(capsys, CASE / "base", CASE / "adapter")
    assert rc == 1
    assert codes(data["findings"]) == {
        ("TG201", "error"),
        ("TG203", "error"),
        ("TG206", "warning"),
        ("TG210", "error"),
        ("TG215", "warning"),  # the case's tokenizer adds no <s> (see above)
    }
    assert tg210(data["findings"])["hint"] == TG210_HINT_302
    assert (data["layout"]["embedding_rows"], data["layout"]["tokenizer_length"]) == (302, 302)


def test_case_base_alone_reads_its_own_rows(capsys: pytest.CaptureFixture[str]) -> None:
    rc, data = check_json(capsys, CASE / "base")
    assert rc == 0
    assert codes(data["findings"]) == {("TG207", "warning"), ("TG215", "warning")}
    assert (data["layout"]["embedding_rows"], data["layout"]["base_rows"], data["layout"]["adapter_rows"]) == (
        300,
        {INPUT: 300, OUTPUT: 300},
        {},
    )
    assert data["layout"]["notes"] == []


def case_unreadable() -> str | None:
    """Why the installed transformers / peft cannot load the case's files (written by transformers 5 and peft
    0.21.2: a ``TokenizersBackend`` tokenizer class, adapter_config keys older peft rejects), or None."""
    try:
        transformers.AutoTokenizer.from_pretrained(CASE / "base")
        peft.PeftConfig.from_pretrained(CASE / "adapter")
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return None


CASE_UNREADABLE = case_unreadable()
#: the case's files load only with the transformers and peft of their era; the folder check reads them anywhere
NEEDS_CASE_LOADABLE = pytest.mark.skipif(
    CASE_UNREADABLE is not None,
    reason=f"the case was written by transformers 5 / peft 0.21.2 and this version cannot load it ({CASE_UNREADABLE})",
)


@NEEDS_CASE_LOADABLE
def test_case_loading_fails_as_tg210_predicts_and_the_fix_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for adapter in ("adapter", "adapter-notok"):
        with pytest.raises(RuntimeError, match=r"size mismatch for .*embed_tokens\.weight.*\[302, 16\].*\[300, 16\]"):
            load_adapter(from_pretrained(CASE / "base"), CASE / adapter)

    # the fix: resize the base to 302 first; the loaded objects then agree with the folder check on every other code
    for adapter, tokenizer_folder in (("adapter", "adapter"), ("adapter-notok", "base")):
        model = load_adapter(resize(from_pretrained(CASE / "base"), 302), CASE / adapter)
        assert model.get_base_model().get_input_embeddings().weight.shape[0] == 302
        expected = object_findings(model, tokenizer_of(CASE / tokenizer_folder))
        _, data = check_json(capsys, CASE / "base", CASE / adapter)
        assert without_tg210(data["findings"]) == expected
        assert "TG210" not in {f["code"] for f in expected}

    # and the base saved after the resize gives exactly the objects' findings: no TG210 left
    fixed = tmp_path / "base-302"
    resize(from_pretrained(CASE / "base"), 302).save_pretrained(fixed)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(CASE / "base" / name, fixed)
    model = load_adapter(from_pretrained(fixed), CASE / "adapter")
    _, data = check_json(capsys, fixed, CASE / "adapter")
    assert data["findings"] == object_findings(model, tokenizer_of(CASE / "adapter"))
    assert codes(data["findings"]) == {("TG201", "error"), ("TG203", "error"), ("TG206", "warning"), ("TG215", "warning")}
    assert (data["layout"]["base_rows"], data["layout"]["adapter_rows"]) == ({INPUT: 302, OUTPUT: 302}, {INPUT: 302, OUTPUT: 302})


# -- the modules-to-save case: GPT-2 (tied), pad added, resized to 50258, LoRA with modules_to_save=[wte, lm_head] ---


@pytest.fixture(scope="module")
def gpt2_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the case's make.py writes: gpt2-base/, adapter-noemb/ (LoRA only), adapter-emb/ (modules_to_save)."""
    root = tmp_path_factory.mktemp("modules-to-save")
    model, tokenizer = zoo.build("gpt2")
    model.save_pretrained(root / "gpt2-base")
    tokenizer.save_pretrained(root / "gpt2-base")
    for name, modules in (("adapter-noemb", None), ("adapter-emb", ["wte", "lm_head"])):
        model, tokenizer = zoo.build("gpt2")
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
        config = peft.LoraConfig(r=2, target_modules=["c_attn"], modules_to_save=modules, task_type="CAUSAL_LM")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fan_in_fan_out for Conv1D, tied layers in modules_to_save
            peft.get_peft_model(model, config).save_pretrained(root / name, save_embedding_layers=bool(modules))
        tokenizer.save_pretrained(root / name)
    return root


def test_modules_to_save_adapter_carries_its_rows(gpt2_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header = read_header(gpt2_case / "adapter-emb" / "adapter_model.safetensors")
    # what peft 0.21 writes for modules_to_save: the trained copy, the original and the plain name, all resized
    assert {name for name in header if ".wte." in name} == {
        "base_model.model.transformer.wte.modules_to_save.weight",
        "base_model.model.transformer.wte.original_module.weight",
        "base_model.model.transformer.wte.weight",
    }
    rc, data = check_json(capsys, gpt2_case / "gpt2-base", gpt2_case / "adapter-emb")
    assert rc == 1
    assert not {"TG204", "TG205"} & {f["code"] for f in data["findings"]}  # the loaded model has 50258 rows
    finding = tg210(data["findings"])
    # GPT-2 ties lm_head to wte: the base saves no lm_head of its own, its wte rows stand in
    assert finding["values"] == {"adapter": {INPUT: 50258, OUTPUT: 50258}, "base": {INPUT: 50257}}
    assert finding["hint"] == "resize the base to 50258 before PeftModel.from_pretrained (model.resize_token_embeddings(50258))"
    assert "input embeddings 50258 vs 50257, output head 50258 vs 50257" in finding["message"]

    with pytest.raises(RuntimeError, match="size mismatch"):
        load_adapter(from_pretrained(gpt2_case / "gpt2-base"), gpt2_case / "adapter-emb")
    model = load_adapter(resize(from_pretrained(gpt2_case / "gpt2-base"), 50258), gpt2_case / "adapter-emb")
    assert without_tg210(data["findings"]) == object_findings(model, tokenizer_of(gpt2_case / "adapter-emb"))


def test_lora_only_adapter_keeps_the_base_rows(gpt2_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # trained on 50258 rows, but the new row was not saved: the loaded model really has 50257 rows (TG204/TG205)
    rc, data = check_json(capsys, gpt2_case / "gpt2-base", gpt2_case / "adapter-noemb")
    assert rc == 1
    assert {"TG204", "TG205"} <= {f["code"] for f in data["findings"]} and "TG210" not in {f["code"] for f in data["findings"]}
    assert (data["layout"]["embedding_rows"], data["layout"]["adapter_rows"]) == (50257, {})
    model = load_adapter(from_pretrained(gpt2_case / "gpt2-base"), gpt2_case / "adapter-noemb")  # loads: nothing to mismatch
    assert data["findings"] == object_findings(model, tokenizer_of(gpt2_case / "adapter-noemb"))


# -- siblings ----------------------------------------------------------------------------------------------------

LLAMA_TOKENS = {"length": 300, "bos": ["<s>", 1], "eos": ["</s>", 2], "unk": ["<unk>", 0]}
CHATML_TOKENS = {
    "length": 300,
    "eos": ["<|im_end|>", 2],
    "pad": ["<|endoftext|>", 0],
    "end_of_turn": ["<|im_end|>", 2],
    "chat_template": "chatml",
}


def tiny_qwen2(layers: int = 1) -> Any:
    """A tied Qwen2 base of 300 rows for the CHATML_TOKENS tokenizer (no bos, eos 2, pad 0), with its generation
    config."""
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=300,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=2,
        pad_token_id=0,
    )
    base = transformers.Qwen2ForCausalLM(config)
    base.generation_config = transformers.GenerationConfig(eos_token_id=2, pad_token_id=0)
    return base


def tiny_llama(vocab: int = 300) -> Any:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def sharded_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tied Qwen2 base saved in 4 shards; an adapter saved with peft's default save_embedding_layers="auto" after
    adding 2 tokens and resizing with pad_to_multiple_of=8 (304 rows for a 302-token tokenizer), tokenizer beside it."""
    root = tmp_path_factory.mktemp("sharded")
    base = tiny_qwen2(layers=2)
    base.save_pretrained(root / "base", max_shard_size="8KB")
    tokenizer = zoo.build_tokenizer(CHATML_TOKENS)
    tokenizer.save_pretrained(root / "base")

    model = from_pretrained(root / "base")  # peft's "auto" compares with the base's config.json: vocab changed
    tokenizer.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>"]})
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=8, mean_resizing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(
            root / "adapter"
        )
    tokenizer.save_pretrained(root / "adapter")
    return root


def test_sharded_base_reads_only_the_embedding_shard(sharded_qwen: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = sharded_qwen / "base"
    weight_map = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    assert len(shards) == 4 and "lm_head.weight" not in weight_map  # tied: no head of its own
    _, data = check_json(capsys, base)
    assert data["layout"]["base_rows"] == {INPUT: 300} and data["layout"]["embedding_rows"] == 300
    read = [name for name in data["files"] if name.endswith(".safetensors")]
    assert read == [str(base / weight_map["model.embed_tokens.weight"])]  # one of the 4 shards
    assert data["files"][-2] == str(base / "model.safetensors.index.json")


def test_sharded_base_with_an_auto_saved_adapter(sharded_qwen: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, adapter = sharded_qwen / "base", sharded_qwen / "adapter"
    rc, data = check_json(capsys, base, adapter)
    assert rc == 1
    finding = tg210(data["findings"])
    assert finding["values"] == {"adapter": {INPUT: 304, OUTPUT: 304}, "base": {INPUT: 300}}
    assert finding["hint"] == "resize the base to 304 before PeftModel.from_pretrained (model.resize_token_embeddings(304))"
    # 302 tokens fit the 304 rows the loaded model has: nothing else is wrong with this layout
    assert codes(data["findings"]) == {("TG210", "error")}
    assert (data["layout"]["embedding_rows"], data["layout"]["tokenizer_length"]) == (304, 302)

    with pytest.raises(RuntimeError, match="size mismatch"):
        load_adapter(from_pretrained(base), adapter)
    model = load_adapter(resize(from_pretrained(base), 304), adapter)
    assert without_tg210(data["findings"]) == object_findings(model, tokenizer_of(adapter)) == []


def save_llama_adapter(tmp_path: Path, name: str, config: Any, rows: int | None, **save: Any) -> tuple[Path, Path]:
    """A tiny Llama base (300 rows, tokenizer beside it) and an adapter trained on ``rows`` rows."""
    base = tmp_path / "base"
    if not base.exists():
        tiny_llama().save_pretrained(base)
        zoo.build_tokenizer(LLAMA_TOKENS).save_pretrained(base)
    model = from_pretrained(base)
    if rows is not None:
        resize(model, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft.get_peft_model(model, config).save_pretrained(tmp_path / name, **save)
    return base, tmp_path / name


def test_lora_on_the_embeddings_carries_the_rows_in_its_factors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = peft.LoraConfig(r=2, target_modules=["q_proj", "embed_tokens", "lm_head"], task_type="CAUSAL_LM")
    base, adapter = save_llama_adapter(tmp_path, "lora-emb", config, 302, save_embedding_layers=False)
    header = read_header(adapter / "adapter_model.safetensors")
    # no whole matrix: the rows are in lora_embedding_A [r, rows] and the head's lora_B [rows, r]
    assert header["base_model.model.model.embed_tokens.lora_embedding_A"].shape == (2, 302)
    assert header["base_model.model.lm_head.lora_B.weight"].shape == (302, 2)
    assert not [name for name in header if name.endswith(("embed_tokens.weight", "lm_head.weight"))]
    _, data = check_json(capsys, base, adapter)
    assert tg210(data["findings"])["values"] == {"adapter": {INPUT: 302, OUTPUT: 302}, "base": {INPUT: 300, OUTPUT: 300}}
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_adapter(from_pretrained(base), adapter)
    model = load_adapter(resize(from_pretrained(base), 302), adapter)
    assert without_tg210(data["findings"]) == object_findings(model, tokenizer_of(base))


@pytest.mark.skipif(
    "trainable_token_indices" not in inspect.signature(peft.LoraConfig).parameters,
    reason="this peft has no trainable tokens (peft >= 0.15)",
)
def test_trainable_token_deltas_are_not_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = peft.LoraConfig(r=2, target_modules=["q_proj"], trainable_token_indices=[5, 7], task_type="CAUSAL_LM")
    base, adapter = save_llama_adapter(tmp_path, "trainable-tokens", config, None)
    header = read_header(adapter / "adapter_model.safetensors")
    assert header["base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"].shape == (2, 16)
    _, data = check_json(capsys, base, adapter)
    assert (data["layout"]["embedding_rows"], data["layout"]["adapter_rows"]) == (300, {})  # not 2 rows
    model = load_adapter(from_pretrained(base), adapter)
    assert data["findings"] == object_findings(model, tokenizer_of(base))
    assert data["findings"] == check_json(capsys, base)[1]["findings"]


def test_same_rows_in_adapter_and_base_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = peft.LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["embed_tokens", "lm_head"], task_type="CAUSAL_LM")
    base, adapter = save_llama_adapter(tmp_path, "mts", config, None)
    _, data = check_json(capsys, base, adapter)
    assert data["layout"]["adapter_rows"] == data["layout"]["base_rows"] == {INPUT: 300, OUTPUT: 300}
    assert "TG210" not in {f["code"] for f in data["findings"]}
    model = load_adapter(from_pretrained(base), adapter)
    assert data["findings"] == object_findings(model, tokenizer_of(base))


# -- which tensor is the embedding: names of other families, read from header-only files ----------------------------


def header_only(path: Path, shapes: dict[str, list[int]]) -> None:
    path.write_bytes(
        header_bytes({name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]} for name, shape in shapes.items()})
    )


FAMILY_NAMES: dict[str, tuple[dict[str, list[int]], dict[str, int], str | None]] = {
    "gpt2": ({"transformer.wte.weight": [50257, 16], "transformer.wpe.weight": [1024, 16]}, {INPUT: 50257}, None),
    "bloom": (
        {"transformer.word_embeddings.weight": [250880, 16], "transformer.word_embeddings_layernorm.weight": [16]},
        {INPUT: 250880},
        None,
    ),
    "t5": (
        {"shared.weight": [32128, 16], "encoder.embed_tokens.weight": [32128, 16], "lm_head.weight": [32128, 16]},
        {INPUT: 32128, OUTPUT: 32128},
        None,
    ),
    "gpt-neox": ({"gpt_neox.embed_in.weight": [50304, 16], "embed_out.weight": [50304, 16]}, {INPUT: 50304, OUTPUT: 50304}, None),
    "llava": (
        {
            "model.language_model.embed_tokens.weight": [32064, 16],
            "model.vision_tower.vision_model.embeddings.patch_embedding.weight": [16, 3, 14, 14],
            "model.vision_tower.vision_model.embeddings.position_embedding.weight": [577, 16],
            "lm_head.weight": [32064, 16],
            "lm_head.bias": [32064],
        },
        {INPUT: 32064, OUTPUT: 32064},
        None,
    ),
    "gemma3n-per-layer-embeddings": (
        {
            "model.language_model.embed_tokens.weight": [262400, 16],
            "model.language_model.embed_tokens_per_layer.weight": [262144, 16],
        },
        {INPUT: 262400},
        None,
    ),
    "mtp-layer-below-the-model": (
        {"model.embed_tokens.weight": [129280, 16], "model.layers.1.embed_tokens.weight": [999, 16]},
        {INPUT: 129280},
        None,
    ),
    "language-model-over-qformer": (
        {"qformer.embeddings.word_embeddings.weight": [30523, 16], "language_model.model.embed_tokens.weight": [32001, 16]},
        {INPUT: 32001},
        None,
    ),
    "two-language-models-disagree": (
        {"thinker.model.embed_tokens.weight": [151936, 16], "talker.model.embed_tokens.weight": [3072, 16]},
        {},
        "talker.model.embed_tokens.weight (3072 rows), thinker.model.embed_tokens.weight (151936 rows) disagree: the input "
        "embeddings rows are unknown",
    ),
    "no-embedding": (
        {"encoder.layer.0.weight": [16, 16], "model.shared.weight": [16]},
        {},
        "no input embedding tensor (*embed_tokens.weight, *wte.weight, *word_embeddings.weight, *embed_in.weight, "
        "*tok_embeddings.weight, *shared.weight): the checkpoint's embedding rows are unknown",
    ),
}


@pytest.mark.parametrize(("shapes", "rows", "note"), FAMILY_NAMES.values(), ids=FAMILY_NAMES.keys())
def test_embedding_tensor_names(tmp_path: Path, shapes: dict[str, list[int]], rows: dict[str, int], note: str | None) -> None:
    shutil.copy(CASE / "base" / "config.json", tmp_path)
    header_only(tmp_path / "model.safetensors", shapes)
    layout = read_folder(tmp_path).layout
    assert layout.base_rows == rows and layout.embedding_rows == rows.get(INPUT)
    notes = [n for n in layout.notes if "model.safetensors" in n]
    assert notes == ([f"{tmp_path / 'model.safetensors'}: {note}"] if note else [])


def test_older_peft_modules_to_save_names(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    shutil.copy(CASE / "adapter-notok" / "adapter_config.json", adapter)
    header_only(
        adapter / "adapter_model.safetensors",
        {
            "base_model.model.model.embed_tokens.modules_to_save.default.weight": [302, 16],
            "base_model.model.lm_head.modules_to_save.default.weight": [302, 16],
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": [2, 16],
        },
    )
    layout = read_folder(CASE / "base", adapter).layout
    assert (layout.adapter_rows, layout.embedding_rows) == ({INPUT: 302, OUTPUT: 302}, 302)


# -- TG210 on layouts ----------------------------------------------------------------------------------------------


def layout_codes(base: dict[str, int], adapter: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
    ids = {"bos": 1, "eos": 2, "pad": 0}
    layout = TokenLayout(model=ids, generation=ids, tokenizer=ids, vocab_size=300, tokenizer_length=300)
    layout.base_rows, layout.adapter_rows = base, adapter
    return [(f.code, f.values) for f in check_layout(layout).findings]


def test_tg210_compares_each_matrix_the_adapter_carries() -> None:
    assert layout_codes({INPUT: 300}, {}) == []  # a plain LoRA adapter
    assert layout_codes({INPUT: 302, OUTPUT: 302}, {INPUT: 302, OUTPUT: 302}) == []
    assert layout_codes({}, {INPUT: 302}) == []  # base rows unknown (.bin): a note, no finding
    assert [code for code, _ in layout_codes({INPUT: 300}, {OUTPUT: 302})] == ["TG210"]  # tied base: input stands in
    assert [code for code, _ in layout_codes({INPUT: 300, OUTPUT: 300}, {INPUT: 300, OUTPUT: 302})] == ["TG210"]


# -- .bin is never unpickled ---------------------------------------------------------------------------------------


class _Tripwire:
    """Unpickling this writes a file: proof that a reader unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (Path.write_text, (self.marker, "unpickled"))


def test_pickled_weights_are_never_unpickled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base"
    shutil.copytree(CASE / "base", base, ignore=shutil.ignore_patterns("*.safetensors"))
    marker = tmp_path / "unpickled.txt"
    (base / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(marker)))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    shutil.copy(CASE / "adapter-notok" / "adapter_config.json", adapter)
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps(_Tripwire(marker)))

    rc, data = check_json(capsys, base)
    assert data["layout"]["embedding_rows"] is None and data["layout"]["base_rows"] == {}
    assert (
        "pytorch_model.bin is a pickle and is never unpickled: the checkpoint's embedding rows are unknown"
        in data["layout"]["notes"]
    )
    rc, data = check_json(capsys, base, adapter)
    assert rc == 0
    assert data["layout"]["notes"][-1] == (
        "adapter_model.bin is a pickle and is never unpickled: whether the adapter carries its own embedding rows is unknown"
    )
    assert str(base / "pytorch_model.bin") not in data["files"]
    assert not marker.exists()

    # safetensors adapter rows onto an unreadable base: rows known, the fit cannot be checked, a note says what to do
    shutil.copy(CASE / "adapter-notok" / "adapter_model.safetensors", adapter)
    rc, data = check_json(capsys, base, adapter)
    assert data["layout"]["embedding_rows"] == 302 and "TG210" not in {f["code"] for f in data["findings"]}
    assert data["layout"]["notes"][-1] == (
        "the adapter carries 302-row embeddings and the base checkpoint's rows are unknown: PeftModel.from_pretrained "
        "needs a base with 302 rows (model.resize_token_embeddings(302))"
    )
    assert not marker.exists()


def test_a_folder_without_weights_says_so(tmp_path: Path) -> None:
    shutil.copytree(CASE / "base", tmp_path / "base", ignore=shutil.ignore_patterns("*.safetensors"))
    layout = read_folder(tmp_path / "base").layout
    assert layout.embedding_rows is None and layout.rows == 300  # the config vocab_size stands in
    assert layout.notes == ["no model.safetensors (or model.safetensors.index.json): the checkpoint's embedding rows are unknown"]


# -- the header reader ---------------------------------------------------------------------------------------------


def test_header_matches_the_safetensors_library(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tmp_path / "t.safetensors"
    save_file(
        {"a.embed_tokens.weight": torch.zeros(7, 3), "b": torch.zeros(5, dtype=torch.bfloat16), "c": torch.zeros(())},
        str(path),
        metadata={"format": "pt"},
    )
    header = read_header(path)
    with safe_open(str(path), framework="pt") as handle:
        assert set(header) == set(handle.keys())
        for name in handle.keys():
            assert list(header[name].shape) == list(handle.get_slice(name).get_shape())
    assert header["a.embed_tokens.weight"] == TensorInfo("F32", (7, 3)) and header["b"].dtype == "BF16"


def _sharded_copy(tmp_path: Path, weight_map: dict[str, str]) -> Path:
    base = Path(shutil.copytree(CASE / "base", tmp_path / "base"))
    (base / "model.safetensors").rename(base / SHARD)
    (base / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return base


def test_a_good_shard_index_gives_the_single_file_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header = read_header(CASE / "base" / "model.safetensors")
    base = _sharded_copy(tmp_path, dict.fromkeys(header, SHARD))
    _, data = check_json(capsys, base, CASE / "adapter-notok")
    _, single = check_json(capsys, CASE / "base", CASE / "adapter-notok")
    assert data["findings"] == single["findings"] and data["layout"] == single["layout"]


def test_an_adapter_with_fewer_rows_than_the_base_is_not_told_to_shrink_it() -> None:
    layout = TokenLayout(
        model={"bos": 1, "eos": 2, "pad": 0},
        tokenizer={"bos": 1, "eos": 2, "pad": 0},
        base_rows={"input_embeddings": 302},
        adapter_rows={"input_embeddings": 300},
        embedding_rows=300,
    )
    (finding,) = [f for f in check_layout(layout).findings if f.code == "TG210"]
    assert finding.hint == (
        "load the adapter onto the base it was saved from (300 rows): shrinking this base to 300 "
        "(model.resize_token_embeddings) would drop rows its tokenizer may use"
    )
