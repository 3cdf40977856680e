"""Real cases about what the model sees, at the calls (``--tokenguard-calls``): the batches that reach
``Trainer.training_step`` and ``generate()``. Data: tests/data/cases (copied from the public reproductions)."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import pytest

pytest.importorskip("peft")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed
# modules in one process crashes, so everything the generated tests import is imported here first.
import peft  # noqa: F401
import torch
import transformers.trainer  # noqa: F401
from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from pytest_tokenguard.suite import zoo
from tests.warmup import import_model_modules

import_model_modules()  # before any pytester story: see tests/warmup.py

pytest_plugins = ("pytester",)

CASES = Path(__file__).parent / "data" / "cases"

BUILD = f'''
import torch
from transformers import AutoTokenizer, GenerationConfig, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

CASES = {str(CASES)!r}
CHAT = [{{"role": "user", "content": "hello"}}, {{"role": "assistant", "content": "hi there"}}]

def double_bos():
    """DeepSeek-R1-Distill layout: the template writes bos, the tokenizer's post-processor adds another."""
    tok = AutoTokenizer.from_pretrained(CASES + "/double-bos")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=151665, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=151643,
                                         eos_token_id=151643, tie_word_embeddings=True))
    model.generation_config = GenerationConfig(bos_token_id=151646, eos_token_id=151643)
    return model, tok

def eos_appended():
    """Mistral-Instruct layout with add_eos_token: every encoded prompt ends with </s>."""
    tok = AutoTokenizer.from_pretrained(CASES + "/eos-appended-to-prompts")
    tok.pad_token, tok.padding_side = tok.unk_token, "left"  # left padding: only the appended eos is wrong
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=32000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1, head_dim=8, bos_token_id=1,
                                             eos_token_id=2, pad_token_id=0))
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return model, tok
'''


@pytest.fixture(scope="module", autouse=True)
def _modules_loaded_outside_pytester(tmp_path_factory: pytest.TempPathFactory) -> None:
    AutoTokenizer.from_pretrained(CASES / "double-bos")
    Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1
        )
    )
    model = MistralForCausalLM(
        MistralConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
        )
    )
    model.generate(torch.tensor([[1, 5]]), attention_mask=torch.ones(1, 2, dtype=torch.long), max_new_tokens=1)
    model, tokenizer = zoo.build("smollm2-135m-instruct")
    zoo.lora_train(model, tokenizer, tmp_path_factory.mktemp("warm"), steps=1)


def test_double_bos_training_fails_even_after_align(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tg_build=BUILD)
    pytester.makepyfile(
        test_sft="""
        from pytest_tokenguard import align_special_tokens
        from pytest_tokenguard.suite import zoo
        from tg_build import CHAT, double_bos

        def test_render_then_tokenize_then_train(tmp_path):
            model, tok = double_bos()
            align_special_tokens(model, tok)
            text = tok.apply_chat_template(CHAT, tokenize=False)
            zoo.lora_train(model, tok, tmp_path, steps=1, texts=[text, text])
        """
    )
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "TG301 doubled BOS at a sequence start",
            "  message: rows [[]0, 1[]] start with bos 151646 '<\uff5cbegin\u2581of\u2581sentence\uff5c>' twice * "
            "[[]at *Trainer.training_step() batch 1[]]",
        ]
    )


def test_eos_appended_prompts_fail_at_generate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tg_build=BUILD)
    pytester.makepyfile(
        test_serve="""
        from tg_build import eos_appended

        def test_generate_from_inst_prompts():
            model, tok = eos_appended()
            batch = tok(["[INST]What is the capital of Taiwan[/INST]", "[INST]Where was the CEO born?[/INST]"],
                        return_tensors="pt", padding=True, return_token_type_ids=False)
            model.generate(**batch, max_new_tokens=2, do_sample=False)

        def test_without_the_appended_eos():
            model, tok = eos_appended()
            batch = tok(["[INST]What is the capital of Taiwan[/INST]"], return_tensors="pt", add_special_tokens=False,
                        return_token_type_ids=False)
            model.generate(**batch, max_new_tokens=2, do_sample=False)
        """
    )
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "TG302 a generation prompt ends in eos or the chat end of turn",
            "  message: rows [[]0, 1[]] end in eos 2 (row 0 at position *; row 1 at position *): generation starts after "
            "the end of a sequence [[]at generate()[]]",
            "FAILED test_serve.py::test_generate_from_inst_prompts (TG302)",
        ]
    )


SFT = """
from pytest_tokenguard.suite import zoo

CHAT = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        [{"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Blue."}]]

def test_sft_chat(tmp_path):
    model, tok = zoo.build("smollm2-135m-instruct")   # pad = eos = <|im_end|>, the chat end of turn
    model.resize_token_embeddings(len(tok))           # changes nothing: the TG140 notice
    texts = [tok.apply_chat_template(c, tokenize=False) for c in CHAT]
    zoo.lora_train(model, tok, tmp_path, steps=1, texts=texts)

def test_sft_chat_with_a_dedicated_pad(tmp_path):
    model, tok = zoo.build("smollm2-135m-instruct")
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    model.resize_token_embeddings(len(tok), pad_to_multiple_of=64, mean_resizing=False)
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    texts = [tok.apply_chat_template(c, tokenize=False) for c in CHAT]
    zoo.lora_train(model, tok, tmp_path, steps=1, texts=texts)
"""


def test_pad_eos_end_of_turn_same_fails_on_the_masked_eos_not_on_tg140(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sft=SFT)
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "TG303 every eos / end-of-turn position is masked in the labels",
            "  message: all * eos / end-of-turn positions of the batch (eos 2 '<|im_end|>') are -100 in labels *",
            # the same fault statically at Trainer.train() (pad = eos = end of turn, the only stop id); TG140 is a notice
            "tokenguard: 3 findings in 2 guarded tests (TG140 x1, TG206 x1, TG303 x1); 0 allowed, 0 expected, 1 notice, "
            "1 failing test",
            "FAILED test_sft.py::test_sft_chat (TG206, TG303)",
        ]
    )


# --- issue 15: labels on padding, placeholder labels, end of turn never learned, BOS dropped -----------------

try:  # the assistant-only case trains with trl's SFTTrainer (imported here, outside pytester, as above)
    for _name in ("datasets", "trl", "trl.trainer.sft_trainer"):
        importlib.import_module(_name)
    HAS_TRL = True
except ImportError:
    HAS_TRL = False
#: the case's model (Qwen3: transformers >= 4.51) and SFTConfig(assistant_only_loss=...) (trl >= 0.20)
try:
    from transformers import Qwen3Config  # noqa: F401

    HAS_CASE_STACK = HAS_TRL and "assistant_only_loss" in importlib.import_module("trl").SFTConfig.__dataclass_fields__
except ImportError:
    HAS_CASE_STACK = False


def copy_case(pytester: pytest.Pytester, name: str) -> Path:
    """The case folder as the user has it: ``<case>/`` beside ``_lib/ckpt.py`` (the cases' shared tiny-tokenizer
    helper, kept once in tests/data/cases/_lib as in the cases' own layout)."""
    import shutil

    case = CASES / name
    shutil.copytree(case, pytester.path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(CASES / "_lib", pytester.path / "_lib", dirs_exist_ok=True)
    return pytester.path / name


def test_padded_labels_placeholder_case_names_the_padded_positions_and_the_image_id(pytester: pytest.Pytester) -> None:
    copy_case(pytester, "padded-labels-placeholder-ids")
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "TG309 labels on padded positions (attention_mask 0)",
            "  message: row 0 has labels on padded positions, attention_mask 0 (row 0 at 14 positions "
            "[[]42, 43, 44, 45, 46, ...[]]), holding 258 '<image>' instead of -100: the loss trains the model on padding "
            "[[]at Trainer.training_step() batch 1[]]",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "TG310 a label is a media placeholder id the processor expands",
            "  message: labels hold the media placeholder 258 '<image>', learned from the tokenizer: an added special "
            "token spelled like a media placeholder (row 0 at 14 positions [[]42, 43, 44, 45, 46, ...[]]): *",
            "  fix:     set the placeholder ids to -100 in the labels *",
        ]
    )
    # only these two: the template's end of turn <end_of_utterance> (259) ends every row, so no TG304
    result.stdout.fnmatch_lines(["FAILED padded-labels-placeholder-ids/test_collator.py::* (TG309, TG310)"])


NEEDS_CASE_STACK = pytest.mark.skipif(
    not HAS_CASE_STACK,
    reason="the case needs trl's SFTTrainer with assistant_only_loss (trl >= 0.20) and Qwen3 (transformers >= 4.51)",
)


def _trl_warns() -> bool:
    """Whether the installed trl logs the end-of-turn warning (catalog TG160: trl >= 1.12)."""
    from pytest_tokenguard.guard.catalog import BY_CODE, exists_in

    return HAS_TRL and exists_in(BY_CODE["TG160"], "0")


TRL_WARNS = _trl_warns()


@functools.cache  # builds the case's model: once for the tests that need it
def _case_trainer_updates() -> bool:
    """Whether the installed ``Trainer.train()`` rewrites the case's model config (``predict_trainer_alignment``:
    the installed transformers' own alignment, run on copies)."""
    import importlib.util
    import sys

    from pytest_tokenguard import predict_trainer_alignment

    case = CASES / "assistant-only-loss-end-of-turn"
    sys.path[:0] = [str(CASES / "_lib"), str(case)]
    try:
        spec = importlib.util.spec_from_file_location("tg_case_assistant_only_sft", case / "test_sft.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model, tokenizer = module.build()
    finally:
        del sys.path[:2]
    return bool(predict_trainer_alignment(model, tokenizer))


@NEEDS_CASE_STACK
def test_assistant_only_loss_case_fails_with_the_end_of_turn_never_learned_code(pytester: pytest.Pytester) -> None:
    copy_case(pytester, "assistant-only-loss-end-of-turn")
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "TG303 every eos / end-of-turn position is masked in the labels",
            "  message: all 4 eos / end-of-turn positions of the batch (eos 258 '<|im_end|>') are -100 in labels "
            "(row 0 at positions [[]18, 40[]]; row 1 at positions [[]14, 31[]]), left out by the loss mask (the pad is no "
            "stop id): the model is never trained to stop [[]at SFTTrainer.training_step() batch 1[]]",
            "  logger:  pytest_tokenguard.calls (check, ERROR)",
            "  phase:   call, seen 1 time",
            "  fix:     the loss mask leaves the end of turn out: put it inside {% generation %}...{% endgeneration %} in "
            "the chat template (trl's assistant_only_loss=True trains only those blocks), or train with "
            "assistant_only_loss=False; *",
        ]
    )
    # trl's own warning on its trl.* logger (through accelerate's adapter: "[RANK 0] " where accelerate >= 1.14 adds it)
    # and the static TG214 the Trainer.train() check finds in the same template
    result.stdout.fnmatch_lines(
        [
            "TG160 trl: the end of turn is outside the assistant-only loss mask",
            "  message: *The chat template does not include the assistant turn's end-of-turn token in the loss mask*",
            "  logger:  trl.trainer.sft_trainer (log, WARNING)",
        ]
        if TRL_WARNS
        else []
    )
    result.stdout.fnmatch_lines(
        [
            "TG214 the chat end of turn lies outside the template's generation blocks (assistant-only loss never trains it)",
            "  message: the chat template writes the end of turn '<|im_end|>' (id 258) after the assistant's "
            "{% generation %} block: *[[]at Trainer.train()[]]",
        ]
    )
    # TG101 where the installed Trainer rewrites the case's config (4.56-5.17 write the tokenizer's None bos over it)
    seen = {"TG101": _case_trainer_updates(), "TG160": TRL_WARNS, "TG214": True, "TG303": True}
    codes = ", ".join(code for code, present in seen.items() if present)
    result.stdout.fnmatch_lines([f"FAILED assistant-only-loss-end-of-turn/test_sft.py::test_assistant_only_sft ({codes})"])


@NEEDS_CASE_STACK
def test_the_same_template_with_full_loss_passes(pytester: pytest.Pytester) -> None:
    """TG214 is about assistant-only loss: the case's template trained on the full sequence (the fix its hint gives)
    learns the end of turn, so --tokenguard-calls must not fail it at Trainer.train() (a user found it did)."""
    folder = copy_case(pytester, "assistant-only-loss-end-of-turn")
    test = folder / "test_sft.py"
    text = test.read_text(encoding="utf-8")
    assert "assistant_only_loss=True" in text
    test.write_text(text.replace("assistant_only_loss=True", "assistant_only_loss=False"), encoding="utf-8")
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider")
    outcome = {"failed": 1} if _case_trainer_updates() else {"passed": 1}  # TG101 where the Trainer rewrites bos
    result.assert_outcomes(**outcome)
    result.stdout.no_fnmatch_line("TG214 *")
    result.stdout.no_fnmatch_line("TG303 *")
    result.stdout.no_fnmatch_line("TG160 *")


SIBLINGS = '''
import sys
sys.path.insert(0, "_lib")
import pytest
import torch
from ckpt import tiny_tokenizer
from transformers import (GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Trainer, TrainingArguments)

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\\\n' + m['content'] + '<|im_end|>\\\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\\\n' }}{% endif %}")
TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)


class Collate:
    """tokenize, pad on the right, labels = ids with -100 on padding (and on ``masked`` ids)"""
    def __init__(self, tok, masked=()):
        self.tok, self.masked = tok, masked

    def __call__(self, rows):
        batch = self.tok([r["text"] for r in rows], padding=True, return_tensors="pt", return_token_type_ids=False)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        for token_id in self.masked:
            labels[labels == token_id] = -100
        batch["labels"] = labels
        return batch


def train(model, tok, texts, tmp_path, collator=None):
    torch.manual_seed(0)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, disable_tqdm=True, save_strategy="no", remove_unused_columns=False)
    Trainer(model=model, args=args, train_dataset=[{"text": t} for t in texts], processing_class=tok,
            data_collator=collator or Collate(tok)).train()


def llama_base(keep_bos):
    """Llama-2-style base: <unk> 0 (pad), <s> 1, </s> 2; the saved tokenizer lost its bos post-processor unless kept"""
    tok = tiny_tokenizer({0: "<unk>", 1: "<s>", 2: "</s>"}, 320, bos="<s>", eos="</s>", unk="<unk>", pad="<unk>",
                         padding_side="right", post_bos="<s>" if keep_bos else None)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=320, head_dim=8, bos_token_id=1, eos_token_id=2, pad_token_id=0, **TINY))
    return model, tok


def gemma_base(keep_bos):
    """Gemma layout: <pad> 0, <eos> 1, <bos> 2"""
    tok = tiny_tokenizer({0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>"}, 320, bos="<bos>", eos="<eos>", unk="<unk>",
                         pad="<pad>", padding_side="right", post_bos="<bos>" if keep_bos else None)
    torch.manual_seed(0)
    model = GemmaForCausalLM(GemmaConfig(vocab_size=320, head_dim=8, bos_token_id=2, eos_token_id=1, pad_token_id=0, **TINY))
    return model, tok


def qwen(**config):
    """Qwen2 layout: no bos in the tokenizer by design, pad <|endoftext|> 0, eos = end of turn <|im_end|> 2"""
    specials = {0: "<|endoftext|>", 1: "<|im_start|>", 2: "<|im_end|>", 3: "<|vision_start|>", 4: "<|vision_end|>",
                5: "<|image_pad|>"}
    tok = tiny_tokenizer(specials, 320, eos="<|im_end|>", pad="<|endoftext|>", padding_side="right", chat_template=CHATML)
    torch.manual_seed(0)
    # config bos None, as the tokenizer has none: Trainer.train() of transformers 4.56-5.17 writes the tokenizer's None
    # over a config bos (TG101), which is not these tests' subject
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=320, bos_token_id=None, eos_token_id=2, pad_token_id=0, **TINY, **config))
    return model, tok


TEXTS = ["The cat sat on the mat.", "Forty years in the desert."]


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_base_model_tokenizer_without_bos(tmp_path, family):
    model, tok = {"llama": llama_base, "gemma": gemma_base}[family](keep_bos=False)
    train(model, tok, [t + tok.eos_token for t in TEXTS], tmp_path)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_base_model_tokenizer_with_bos(tmp_path, family):
    model, tok = {"llama": llama_base, "gemma": gemma_base}[family](keep_bos=True)
    train(model, tok, [t + tok.eos_token for t in TEXTS], tmp_path)


def test_qwen_layout_has_no_bos_by_design(tmp_path):
    model, tok = qwen()
    texts = [tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": "Ok."}],
                                     tokenize=False) for q in ("Hi", "Who are you?")]
    train(model, tok, texts, tmp_path)


VL_TEXTS = ["<|im_start|>user\\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>What is it?<|im_end|>\\n"
            "<|im_start|>assistant\\nA cat.<|im_end|>\\n"] * 2


def test_qwen2_vl_style_collator_trains_on_image_pads(tmp_path):
    model, tok = qwen(image_token_id=5, video_token_id=6)   # Qwen2-VL config: image_token_id <|image_pad|>
    train(model, tok, VL_TEXTS, tmp_path)


def test_qwen2_vl_style_collator_masking_image_pads(tmp_path):
    model, tok = qwen(image_token_id=5, video_token_id=6)
    train(model, tok, VL_TEXTS, tmp_path, collator=Collate(tok, masked=[5]))
'''


def test_bos_and_placeholder_siblings(pytester: pytest.Pytester) -> None:
    """A base model whose tokenizer no longer adds the family's bos fails (Llama-2 and Gemma layouts), with the bos
    kept passes; Qwen (no bos by design) passes; a Qwen2-VL-style config's image_token_id as a label fails."""
    shutil_source = CASES / "_lib"
    (pytester.path / "_lib").mkdir()
    (pytester.path / "_lib" / "ckpt.py").write_text((shutil_source / "ckpt.py").read_text(encoding="utf-8"), encoding="utf-8")
    pytester.makepyfile(test_siblings=SIBLINGS)
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(failed=3, passed=4)
    result.stdout.fnmatch_lines(
        [
            "TG311 sequences start without the bos the model was trained with",
            "  message: rows [[]0, 1[]] (2 of 2 rows) start without bos 1 '<s>', which the tokenizer declares and the "
            "model config names as its bos; first real token: row 0 at position 0 (54 'T'); row 1 at position 0 "
            "(40 'F'): the model was trained with sequences that start with bos [[]at Trainer.training_step() batch 1[]]",
        ]
    )
    result.stdout.fnmatch_lines(["  message: rows [[]0, 1[]] (2 of 2 rows) start without bos 2 '<bos>', *"])
    result.stdout.fnmatch_lines(
        [
            "TG310 a label is a media placeholder id the processor expands",
            "  message: labels hold the media placeholder 5 '<|image_pad|>', learned from config.image_token_id (row 0 at "
            "positions [[]7, 8[]]; row 1 at positions [[]7, 8[]]): *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "FAILED test_siblings.py::test_base_model_tokenizer_without_bos[[]gemma[]] (TG311)",
            "FAILED test_siblings.py::test_base_model_tokenizer_without_bos[[]llama[]] (TG311)",
            "FAILED test_siblings.py::test_qwen2_vl_style_collator_trains_on_image_pads (TG310)",
        ]
    )
