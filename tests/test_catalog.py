"""Every wording transformers 4.40 .. 5.24 used classifies to its code, and nothing else does."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from pytest_tokenguard.guard.catalog import BY_CODE, ENTRIES, RUNTIME_CODES, classify, parse_updated_tokens, trainer_fix_lines

W = logging.WARNING
MASK = "Please pass your input's `attention_mask` to obtain reliable results."

# (code, level, message): each variant listed in the research catalog, typos included.
SAMPLES = [
    (
        "TG101",
        W,
        "The tokenizer has new PAD/BOS/EOS tokens that differ from the model config and generation config. "
        "The model config and generation config were aligned accordingly, being updated with the tokenizer's values. "
        "Updated tokens: {'eos_token_id': 151645, 'bos_token_id': None, 'pad_token_id': 151643}.",
    ),
    ("TG110", W, "Setting `pad_token_id` to `eos_token_id`:151645 for open-end generation."),
    ("TG110", W, "Setting `pad_token_id` to `eos_token_id`:None for open-end generation."),
    (
        "TG111",
        W,
        f"The attention mask and the pad token id were not set. As a consequence, you may observe unexpected behavior. {MASK}",
    ),
    (
        "TG111",
        W,
        f"The attention mask and the pad token id were not set, with a batched input. As a consequence, you "
        f"may observe unexpected behavior. {MASK}",
    ),
    (
        "TG112",
        W,
        "The attention mask is not set and cannot be inferred from input because pad token is same as eos "
        f"token.As a consequence, you may observe unexpected behavior. {MASK}",
    ),
    (
        "TG112",
        W,
        "The attention mask is not set and cannot be inferred from input because pad token is same as eos "
        f"token. As a consequence, you may observe unexpected behavior. {MASK}",
    ),
    (
        "TG112",
        W,
        "The attention mask is not set with a batched input, and cannot be inferred from input because pad "
        f"token is same as eos token. As a consequence, you may observe unexpected behavior. {MASK}",
    ),
    (
        "TG113",
        W,
        "A decoder-only architecture is being used, but right-padding was detected! For correct generation "
        "results, please set `padding_side='left'` when initializing the tokenizer.",
    ),
    (
        "TG114",
        W,
        "`eos_token_id` should consist of positive integers, but is tensor([-1], device='cuda:0'). Your "
        "generation will not stop until the maximum length is reached. Depending on other flags, it may even crash.",
    ),
    ("TG115", W, "`eos_token_id` has to be a list of positive integers, but is [-1]"),
    (
        "TG120",
        W,
        "`pad_token_id` should be positive but got -1. This will cause errors when batch generating, if "
        "there is padding. Please set `pas_token_id` explicitly by `model.generation_config.pad_token_id=PAD_TOKEN_ID` "
        "to avoid errors in generation, and ensure your `input_ids` input does not have negative values.",
    ),
    (
        "TG120",
        logging.INFO,
        "GenerationConfig is valid but: \n- `pad_token_id`: `pad_token_id` should be positive but "
        "got -1. This will cause errors when batch generating, if there is padding. Please set `pad_token_id` explicitly "
        "as `model.generation_config.pad_token_id=PAD_TOKEN_ID` to avoid errors in generation",
    ),
    (
        "TG121",
        W,
        "The following generation flags are not valid and may be ignored: ['pad_token_id']. Set "
        "`TRANSFORMERS_VERBOSITY=info` for more details.",
    ),
    ("TG121", W, "The following generation flags are not valid and may be ignored: ['temperature', 'pad_token_id']."),
    (
        "TG130",
        W,
        "Your generation config was originally created from the model config, but the model config has "
        "changed since then. Unless you pass the `generation_config` argument ...",
    ),
    (
        "TG131",
        W,
        "Some non-default generation parameters are set in the model config. These should go into a "
        "GenerationConfig file instead.\nNon-default generation parameters: {'forced_eos_token_id': 2}",
    ),
    (
        "TG132",
        W,
        "Moving the following attributes in the config to the generation config: {'forced_eos_token_id': 2}. "
        "You are seeing this warning because you've set generation parameters in the model config, as opposed to in "
        "the generation config.",
    ),
    (
        "TG133",
        W,
        "You have modified the pretrained model configuration to control generation. This is a deprecated "
        "strategy to control generation and will be removed in v5.",
    ),
    (
        "TG134",
        W,
        "`generation_config` default values have been modified to match model-specific defaults: "
        "{'pad_token_id': 151643, 'bos_token_id': 151643}. If this is not desired, please set these values explicitly.",
    ),
    (
        "TG135",
        W,
        "Model config: pad_token_id must be `None` or an integer within the vocabulary (between 0 and "
        "151935), got -1. This may result in unexpected behavior.",
    ),
    ("TG136", W, "Please make sure the generation config includes `forced_bos_token_id=0`. "),
    (
        "TG140",
        logging.INFO,
        "You are resizing the embedding layer without providing a `pad_to_multiple_of` "
        "parameter. This means that the new embedding dimension will be 151670. This might induce ...",
    ),
    (
        "TG141",
        W,
        "The new embeddings will be initialized from a multivariate normal distribution that has old "
        "embeddings' mean and covariance. As described in this article: ...",
    ),
    (
        "TG141",
        W,
        "The new lm_head weights will be initialized from a multivariate normal distribution that has old "
        "embeddings' mean and covariance. As described in this article: ...",
    ),
    (
        "TG142",
        logging.INFO,
        "Special tokens have been added in the vocabulary, make sure the associated word embeddings are fine-tuned or trained.",
    ),
    ("TG146", logging.ERROR, "Using pad_token, but it is not set yet."),
    (
        "TG147",
        W,
        "We strongly recommend passing in an `attention_mask` since your input_ids may be padded. See "
        "https://huggingface.co/docs/transformers/troubleshooting#incorrect-output-when-padding-tokens-arent-masked.",
    ),
    ("TG150", W, "`eos_token_id` not set in GenerationConfig. Setting to -1 (disabled)."),
    (
        "TG151",
        logging.ERROR,
        "Tokenizer was not supporting padding necessary for zero-shot, attempting to use `pad_token=eos_token`",
    ),
    (
        "TG155",
        W,
        "Asking to pad to max_length but no maximum length is provided and the model has no predefined "
        "maximum length. Default to no padding.",
    ),
    (
        "TG156",
        W,
        "Due to limitations of your current torch version, we cannot correctly account for the left-padding "
        "when computing the chunked attention pattern. This will lead to a wrong attention mask",
    ),
    (
        "TG157",
        W,
        "`eos_token_id` is deprecated in this function and will be removed in v4.41, use "
        "`stopping_criteria=StoppingCriteriaList([EosTokenCriteria(eos_token_id=eos_token_id)])` instead.",
    ),
    # Unknown future wording that still talks about special tokens: the fallback.
    ("TG100", W, "The eos_token_id of your adapter differs from the base model."),
    ("TG100", W, "Your tokenizer's padding_side is right; batched generation may be wrong."),
    # ... or (trl's words) the end of turn, a chat template's generation markers, stop tokens
    ("TG100", W, "[RANK 0] The end-of-turn token is never trained with this template."),
    ("TG100", W, "The chat template has no {% generation %} block; the assistant mask is empty."),
    ("TG100", W, "return_assistant_tokens_mask==True but chat template does not contain `{% generation %}` keyword."),
    ("TG100", W, "Stop tokens of the template differ from the generation config."),
    # trl's own messages (accelerate >= 1.14 prefixes "[RANK n] "); tests/test_trl_messages.py reads the installed trl
    (
        "TG160",
        W,
        "[RANK 0] The chat template does not include the assistant turn's end-of-turn token in the loss mask; the model "
        "may not learn to stop.",
    ),
    (
        "TG161",
        W,
        "The tokenized prompt is not a prefix of the tokenized prompt+completion, usually because ... left out of the "
        "training sequence: '</s>'. The model is trained on a context that differs from the one it sees at inference.",
    ),
    (
        "TG162",
        W,
        "Mismatch between tokenized prompt and the start of tokenized prompt+completion. This may be due to unexpected "
        "tokenizer behavior, whitespace issues, or special token handling.",
    ),
    ("TG162", W, "[RANK 1] Mismatch between tokenized prompt and the start of tokenized prompt+rejected. This may be"),
    (
        "TG163",
        W,
        "Cloning chat template added new tokens to the tokenizer, but 'lm_head' is not in PEFT's `modules_to_save`. As a "
        "result, the model may not learn to generate outputs with these new tokens.",
    ),
    ("TG164", W, "`pad_token` is deprecated and will be removed in v2.0.0. Set `tokenizer.pad_token` directly and pass it"),
    ("TG165", W, "[RANK 0] The prompt alone fills `max_length`, so truncation leaves an empty completion. Consider"),
    ("TG166", W, "The pad_token_id and eos_token_id values of this tokenizer are identical. If you are planning for"),
    (
        "TG167",
        W,
        "Could not find instruction key `### Q:` in the following instance: hi. This instance will be ignored in loss "
        "calculation. Note, if this happens often, consider increasing the `max_seq_length`.",
    ),
    (
        "TG167",
        W,
        "Could not find response key `[835, 4007]` in the following instance: <s> a b</s> This instance will be ignored in "
        "loss calculation.",
    ),
    (
        "TG168",
        W,
        "The passed tokenizer does not have an EOS token. We will use the passed eos_token_id instead which "
        "corresponds to 0. If this is not the correct EOS token, make sure to pass the correct eos_token_id.",
    ),
    ("TG169", W, "You passed a processing_class with `padding_side` not equal to `right` to the SFTTrainer. This might"),
]


@pytest.mark.parametrize(("code", "level", "message"), SAMPLES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(SAMPLES)])
def test_each_wording_classifies_to_its_code(code: str, level: int, message: str) -> None:
    match = classify(message, level)
    assert match is not None
    assert match.code == code


@pytest.mark.parametrize(
    "message",
    [
        "Some weights of the model checkpoint at x were not used when initializing Qwen3ForCausalLM",
        "The following generation flags are not valid and may be ignored: ['temperature']. Set "
        "`TRANSFORMERS_VERBOSITY=info` for more details.",
        "`is_gradient_checkpointing` is deprecated and will be removed in v6.",
        "Tokenizing the dataset took 3s",
        "padding_to_multiple_of is deprecated",
        # trl's non-token warnings (padding-free fallbacks, batch size, generation lengths)
        "[RANK 0] `padding_free=True` is temporarily unavailable after a refactor and is currently disabled. Falling "
        "back to standard padding (`padding_free=False`).",
        "You are using a per_device_train_batch_size of 1 with padding-free training. Using a batch size of 1 annihilate "
        "the benefits of padding-free training.",
        "The configuration has `max_new_tokens` (256) >= `max_length` (512). This will cause prompts to be truncated or "
        "completely removed in the forward pass.",
        "The `tokenizer` argument of `get_training_chat_template` is deprecated and will be removed in TRL 2.0.",
        "Chat templates should be in a 'chat_template.jinja' file but found key='chat_template' in the processor's config.",
        "`gradient_checkpointing` is deprecated and will be removed in v6. Use `activation_checkpointing` instead.",
    ],
)
def test_unrelated_warnings_are_ignored(message: str) -> None:
    assert classify(message, logging.WARNING) is None


def test_info_records_only_count_for_info_level_entries() -> None:
    # TG100 needs WARNING; an INFO config dump that mentions pad_token_id is not a finding.
    assert classify('Model config Qwen3Config {"pad_token_id": null}', logging.INFO) is None
    assert classify("Setting `pad_token_id` to `eos_token_id`:2 for open-end generation.", logging.INFO) is None


def test_raised_messages_are_not_observed() -> None:
    message = "Asking to pad but the tokenizer does not have a padding token. Please select a token"
    match = classify(message, logging.ERROR)
    assert match is None or match.code == "TG100"
    assert BY_CODE["TG143"].observed is False


def test_codes_cover_the_issue_ranges() -> None:
    wanted = {
        "TG100",
        "TG101",
        *(f"TG11{i}" for i in range(6)),
        "TG120",
        "TG121",
        "TG122",
        *(f"TG13{i}" for i in range(6)),
        *(f"TG14{i}" for i in range(10)),
        "TG150",
    }
    assert wanted <= RUNTIME_CODES


def test_updated_tokens_parse_and_fix_lines() -> None:
    updated = parse_updated_tokens("{'eos_token_id': 151645, 'bos_token_id': None, 'pad_token_id': 151643}")
    assert updated == {"eos_token_id": 151645, "bos_token_id": None, "pad_token_id": 151643}
    lines = trainer_fix_lines(updated)
    assert "model.config.pad_token_id = tokenizer.pad_token_id  # 151643" in lines
    assert "model.generation_config.pad_token_id = tokenizer.pad_token_id  # 151643" in lines
    assert any("tokenizer defines no bos_token" in line for line in lines)
    assert parse_updated_tokens("{not python") == {}


def test_catalog_imports_no_transformers() -> None:
    code = (
        "import sys, pytest_tokenguard, pytest_tokenguard.guard.catalog, pytest_tokenguard.plugin;"
        "heavy = [m for m in ('transformers', 'torch', 'peft') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.sampled_from([s for s in SAMPLES if s[0] != "TG100"]), st.text(max_size=40), st.text(max_size=40))
def test_catalog_messages_are_found_inside_longer_records(sample: tuple[str, int, str], before: str, after: str) -> None:
    # transformers appends hints or prefixes lines ("- `pad_token_id`: ..."); the code must not change.
    code, level, message = sample
    match = classify(f"{before}\n{message}\n{after}", level)
    assert match is not None and match.code == code


@given(st.text(max_size=300), st.sampled_from([logging.INFO, logging.WARNING, logging.ERROR]))
def test_classify_never_raises_and_fallback_needs_a_token_word(text: str, level: int) -> None:
    match = classify(text, level)
    if match is not None and match.code == "TG100":
        assert level >= logging.WARNING
        words = ("bos", "eos", "pad", "special", "attention", "padding", "end", "generation", "stop")
        assert any(word in text.lower() for word in words)


def test_entries_know_the_versions_their_message_exists_in() -> None:
    from pytest_tokenguard.guard.catalog import active_entries, exists_in

    old = {e.code for e in active_entries("4.46.3")}
    new = {e.code for e in active_entries("5.24.0")}
    assert "TG101" not in old and "TG101" in new  # the Trainer aligns from 4.56
    assert "TG110" in old and "TG110" not in new  # removed in 5.13
    tg101 = next(e for e in ENTRIES if e.code == "TG101")
    assert exists_in(tg101, "4.56.0") and not exists_in(tg101, "4.55.4")
    assert exists_in(tg101, "4.56.0rc1")  # a release candidate counts as its release


def test_trl_entries_use_trl_versions() -> None:
    from pytest_tokenguard.guard.catalog import TRL_EXAMINED, active_entries, exists_in

    trl_codes = {e.code for e in ENTRIES if e.library == "trl"}
    assert trl_codes == {f"TG16{i}" for i in range(10)}
    assert {e.library for e in ENTRIES} == {"transformers", "trl"}
    # the transformers version does not decide a trl entry: trl's does
    assert {e.code for e in active_entries("5.24.0", trl="1.16.0")} & trl_codes == {"TG160", "TG161", "TG163", "TG164", "TG165"}
    assert {e.code for e in active_entries("5.0.0", trl="1.13.0")} & trl_codes == {"TG160", "TG162", "TG163", "TG164"}
    assert {e.code for e in active_entries("4.53.3", trl="0.19.1")} & trl_codes == {"TG162", "TG166", "TG167"}
    assert {e.code for e in active_entries("4.46.3", trl="0.12.2")} & trl_codes == {"TG166", "TG167", "TG168", "TG169"}
    assert exists_in(BY_CODE["TG161"], "5.24.0", trl="1.15.0rc1") and not exists_in(BY_CODE["TG161"], "5.24.0", trl="1.14.0")
    assert all(e.first in TRL_EXAMINED for e in ENTRIES if e.library == "trl")


def test_catalog_command(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pytest_tokenguard.cli import main

    assert main(["catalog", "--transformers-version", "4.46.3", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["transformers"] == "4.46.3" and all(e["active"] for e in data["entries"])
    assert "TG101" not in {e["code"] for e in data["entries"]}
    assert main(["catalog", "--all"]) == 0
    text = capsys.readouterr().out
    assert f"every entry ({len(ENTRIES)})" in text and "TG101  Trainer rewrote special tokens" in text
    assert "  regex: The tokenizer has new PAD/BOS/EOS tokens" in text
