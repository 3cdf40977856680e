"""The catalog of transformers and trl token-alignment messages (codes TG1xx).

Data only plus a classifier: no transformers or trl import, so the plugin can classify records
without loading either library. Wording variants, channels and version ranges come from
research over transformers 4.40 .. 5.24 (see README, "Codes") and over the trl releases in
:data:`TRL_EXAMINED` (TG160-TG169: the messages trl logs on its ``trl.*`` loggers or warns from its modules).
"""

from __future__ import annotations

import ast
import functools
import logging
import re
from dataclasses import dataclass
from typing import Literal

Channel = Literal["log", "warnings", "raise"]
#: The library whose message an entry matches (and whose versions ``first``/``last`` are).
Library = Literal["transformers", "trl"]

#: The code given to token-related transformers records that no catalog entry describes.
FALLBACK_CODE = "TG100"


@dataclass(frozen=True)
class Entry:
    code: str
    title: str
    #: the regex source; compiled on first use (:attr:`compiled`), not at import
    pattern: str
    channel: Channel
    first: str
    last: str | None  # None: still present in the newest version examined
    fix: str
    #: Lowest level at which the record counts; INFO for messages transformers logs as info.
    min_level: int = logging.WARNING
    #: whose message this is: ``first``/``last`` are versions of this library
    library: Library = "transformers"

    @functools.cached_property
    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.DOTALL)

    @property
    def observed(self) -> bool:
        """Raised messages already fail the test through the exception."""
        return self.channel != "raise"


def _entry(
    code: str,
    title: str,
    pattern: str,
    channel: Channel,
    first: str,
    last: str | None,
    fix: str,
    min_level: int = logging.WARNING,
    library: Library = "transformers",
) -> Entry:
    return Entry(code, title, pattern, channel, first, last, fix, min_level, library)


#: The trl releases whose source the trl entries were read from (the messages of ``logger.warning`` /
#: ``warning_once`` / ``warnings.warn`` calls, by AST). A trl entry's ``first``/``last`` are the oldest and
#: newest of these that have its message; releases in between that are not listed are assumed alike.
TRL_EXAMINED: tuple[str, ...] = (
    "0.12.0",
    "0.12.2",
    "0.19.1",
    "0.20.0",
    "0.21.0",
    "0.22.2",
    "0.23.0",
    "0.26.0",
    "0.29.1",
    "1.0.0",
    "1.12.0",
    "1.13.0",
    "1.14.0",
    "1.15.0",
    "1.16.0",
)

#: accelerate >= 1.14 (trl's ``get_logger`` adapter) puts this before every message; patterns search, so it
#: may precede any of them.
RANK_PREFIX = r"(?:\[RANK \d+\] )?"


def _trl(code: str, title: str, pattern: str, channel: Channel, first: str, last: str | None, fix: str) -> Entry:
    return Entry(code, title, RANK_PREFIX + pattern, channel, first, last, fix, logging.WARNING, "trl")


#: What ``Trainer.train()`` logs when it aligns special tokens (transformers >= 4.56,
#: ``trainer_utils.align_special_tokens`` / ``Trainer._align_special_tokens``); ``{updated}`` is the dict.
TG101_MESSAGE = (
    "The tokenizer has new PAD/BOS/EOS tokens that differ from the model config and generation config. "
    "The model config and generation config were aligned accordingly, being updated with the tokenizer's "
    "values. Updated tokens: {updated}."
)

ENTRIES: tuple[Entry, ...] = (
    _entry(
        "TG101",
        "Trainer rewrote special tokens to match the tokenizer",
        re.escape(TG101_MESSAGE.split("{updated}")[0]).replace("\\ ", " ") + r"(?P<updated>\{.*\})\.",
        "log",
        "4.56.0",
        None,
        "align the model config and generation config with the tokenizer before building the Trainer",
    ),
    _entry(
        # trl logs nothing: this matches the message the guard records itself (pytest_tokenguard.guard.trl)
        # when a trl trainer's __init__ changed the model's ids; trl >= 1.13 needs transformers >= 4.56.2
        "TG102",
        "trl trainer rewrote special tokens",
        r"(?P<trainer>\w+)\.__init__ rewrote special tokens: (?P<updated>\{.*\})",
        "log",
        "4.56.2",
        None,
        "align the model config and generation config with the tokenizer before building the trl trainer",
    ),
    _entry(
        # no transformers message either: the session records it when a child process's hook failed
        # (pytest_tokenguard.children); the child ran on unguarded
        "TG109",
        "a child process could not be guarded",
        r"tokenguard could not guard child process (?P<pid>\d+): (?P<error>.*)",
        "log",
        "4.40.0",
        None,
        "read the error: the child ran unguarded; fix its environment or turn the child guard off with --tokenguard-children=no",
    ),
    _entry(
        "TG110",
        "pad_token_id defaulted to eos_token_id for generation",
        r"Setting `pad_token_id` to `eos_token_id`:(?P<eos>.+?) for open-end generation\.",
        "log",
        "4.40.0",
        "5.12.1",
        "set model.generation_config.pad_token_id = tokenizer.pad_token_id (or pass a GenerationConfig with pad)",
    ),
    _entry(
        "TG111",
        "generate() called without attention mask and pad token id",
        r"The attention mask and the pad token id were not set(?:, with a batched input)?\. As a consequence, you "
        r"may observe unexpected behavior\. Please pass your input's `attention_mask` to obtain reliable results\.",
        "log",
        "4.40.0",
        None,
        "pass attention_mask=inputs['attention_mask'] to generate() and set generation_config.pad_token_id",
    ),
    _entry(
        "TG112",
        "attention mask cannot be inferred: pad equals eos",
        r"The attention mask is not set(?: with a batched input,)? and cannot be inferred from input because pad "
        r"token is same as eos token\.\s?As a consequence, you may observe unexpected behavior\. Please pass your "
        r"input's `attention_mask` to obtain reliable results\.",
        "log",
        "4.42.0",
        None,
        "pass attention_mask to generate(); pad equals eos so it cannot be inferred",
    ),
    _entry(
        "TG113",
        "right padding with a decoder-only model",
        r"A decoder-only architecture is being used, but right-padding was detected! For correct generation "
        r"results, please set `padding_side='left'` when initializing the tokenizer\.",
        "log",
        "4.40.0",
        None,
        "set tokenizer.padding_side = 'left' before tokenizing prompts for generate()",
    ),
    _entry(
        "TG114",
        "eos_token_id is not a positive integer",
        r"`eos_token_id` should consist of positive integers, but is (?P<eos>.+?)\. Your generation will not stop "
        r"until the maximum length is reached\. Depending on other flags, it may even crash\.",
        "log",
        "4.41.0",
        None,
        "set generation_config.eos_token_id to the tokenizer's eos id(s), non-negative ints",
    ),
    _entry(
        "TG115",
        "eos_token_id is not a list of positive integers",
        r"`eos_token_id` has to be a list of positive integers, but is (?P<eos>.+)",
        "log",
        "4.40.0",
        "4.40.2",
        "set generation_config.eos_token_id to non-negative int ids",
    ),
    _entry(
        "TG120",
        "negative pad_token_id in the generation config",
        r"`pad_token_id` should be positive but got (?P<pad>-?\d+)\. This will cause errors when batch generating, "
        r"if there is padding\. Please set `pa[sd]_token_id` explicitly (?:by|as) "
        r"`model\.generation_config\.pad_token_id=PAD_TOKEN_ID` to avoid errors in generation",
        "log",
        "4.41.0",
        None,
        "set model.generation_config.pad_token_id = tokenizer.pad_token_id (a non-negative id)",
        min_level=logging.INFO,
    ),
    _entry(
        "TG121",
        "generation config flags invalid: a special token id",
        r"The following generation flags are not valid and may be ignored: \[(?P<flags>[^\]]*'(?:pad|bos|eos|"
        r"forced_bos|forced_eos|decoder_start)_token_id'[^\]]*)\]\.",
        "log",
        "4.52.1",
        None,
        "fix the listed token ids in model.generation_config (non-negative ids inside the vocabulary)",
    ),
    _entry(
        "TG122",
        "generation config invalid on save",
        r"(?:The (?:loaded )?generation config instance is invalid -- `(?:GenerationConfig)?\.validate\(\)` throws "
        r"warnings and/or exceptions\.|GenerationConfig is invalid: \n)",
        "raise",
        "4.40.0",
        None,
        "fix the generation config fields listed in the error before save_pretrained",
    ),
    _entry(
        "TG130",
        "model config changed after the generation config was derived from it",
        r"Your generation config was originally created from the model config, but the model config has changed "
        r"since then\.",
        "log",
        "4.40.0",
        "4.44.2",
        "set token ids on model.generation_config too, not only on model.config",
    ),
    _entry(
        "TG131",
        "generation parameters stored in the model config",
        r"Some (?:non-default )?generation parameters are set in the model config\. These should go into",
        "warnings",
        "4.40.0",
        None,
        "move forced_bos/forced_eos and other generation params to model.generation_config",
    ),
    _entry(
        "TG132",
        "generation attributes moved from model config on save",
        r"Moving the following attributes in the config to the generation config: (?P<params>\{.*?\})\. You are "
        r"seeing this warning because you've set generation parameters in the model config, as opposed to in the "
        r"generation config\.",
        "warnings",
        "4.45.0",
        "4.57.6",
        "set those attributes on model.generation_config instead of model.config",
    ),
    _entry(
        "TG133",
        "generation controlled through the model config",
        r"You have modified the pretrained model configuration to control generation",
        "warnings",
        "4.40.0",
        None,
        "modify model.generation_config (or pass generation_config=) instead of model.config",
    ),
    _entry(
        "TG134",
        "generation config token ids replaced by model defaults",
        r"`generation_config` default values have been modified to match model-specific defaults: "
        r"(?P<values>\{.*'(?:pad|bos|eos|decoder_start)_token_id'.*\})\. If this is not desired, please set these "
        r"values explicitly\.",
        "log",
        "4.50.0",
        "4.57.6",
        "set bos/eos/pad explicitly in the GenerationConfig you pass to generate()",
    ),
    _entry(
        "TG135",
        "special token id outside the vocabulary",
        r"Model config: (?P<name>\w+) must be `None` or an integer within the vocabulary \(between 0 and "
        r"(?P<max>-?\d+)\), got (?P<value>-?\d+)\. This may result in unexpected behavior\.",
        "log",
        "5.9.0",
        None,
        "set the id to one inside [0, vocab_size) or None in model.config",
    ),
    _entry(
        "TG136",
        "forced_bos_token_id missing from the generation config",
        r"Please make sure the generation config includes `forced_bos_token_id=(?P<bos>[^`]*)`\.",
        "log",
        "5.0.0",
        None,
        "set generation_config.forced_bos_token_id explicitly",
    ),
    _entry(
        "TG140",
        "embeddings resized without pad_to_multiple_of",
        r"You are resizing the embedding layer without providing a `pad_to_multiple_of` parameter\. This means "
        r"that the new embedding dimension will be (?P<n>\d+)\.",
        "log",
        "4.40.0",
        None,
        "pass pad_to_multiple_of=64 to resize_token_embeddings",
        min_level=logging.INFO,
    ),
    _entry(
        "TG141",
        "new embedding rows initialised from the old mean",
        r"The new (?:embeddings|lm_head weights) will be initialized from a multivariate normal distribution that "
        r"has old embeddings' mean and covariance\.",
        "log",
        "4.46.0",
        None,
        "reuse an existing token as pad (tokenizer.pad_token = <unused special token>) instead of growing the vocab,"
        " or train the new rows",
    ),
    _entry(
        "TG142",
        "special tokens added to the vocabulary",
        r"Special tokens have been added in the vocabulary, make sure the associated word embeddings are fine-tuned "
        r"or trained\.",
        "log",
        "4.40.0",
        "4.57.6",
        "make sure the embeddings of added special tokens are trained (modules_to_save=['embed_tokens', 'lm_head'])",
        min_level=logging.INFO,
    ),
    _entry(
        "TG143",
        "padding requested without a pad token",
        r"Asking to pad but the tokenizer does not have a padding token\.",
        "raise",
        "4.40.0",
        None,
        "set tokenizer.pad_token before padding",
    ),
    _entry(
        "TG144",
        "collator padding without a pad token",
        r"You are attempting to pad samples but the tokenizer you are using \((?P<cls>[^)]*)\) does not have a "
        r"pad token\.",
        "raise",
        "4.40.0",
        None,
        "set tokenizer.pad_token before collating",
    ),
    _entry(
        "TG145",
        "pipeline batching without a pad token",
        r"Pipeline with tokenizer without pad_token cannot do batching\.",
        "raise",
        "4.40.0",
        None,
        "set pipe.tokenizer.pad_token_id",
    ),
    _entry(
        "TG146",
        "special token read while unset",
        r"Using (?P<key>(?:bos|eos|pad|unk|sep|cls|mask)_token(?:_id)?|additional_special_tokens), but it is not set "
        r"yet\.",
        "log",
        "4.40.0",
        None,
        "define the token on the tokenizer before reading it",
    ),
    _entry(
        "TG147",
        "possible padding without attention mask",
        r"We strongly recommend passing in an `attention_mask` since your input_ids may be padded\.",
        "log",
        "4.40.0",
        None,
        "pass attention_mask to the model's forward",
    ),
    _entry(
        "TG148",
        "add_bos/add_eos set while the token is None",
        r"add_(?P<which>bos|eos)_token = True but (?P=which)_token = None",
        "raise",
        "4.40.0",
        "5.2.0",
        "define the token or set add_*_token = False",
    ),
    _entry(
        "TG149",
        "tokenizer special-token pattern needs an undefined token",
        r"Cannot add special tokens following '(?P<pattern>\w+)' pattern because",
        "raise",
        "5.2.0",
        None,
        "define the tokens the pattern needs",
    ),
    _entry(
        "TG150",
        "continuous batching without eos_token_id",
        r"`eos_token_id` not set in GenerationConfig\. Setting to -1 \(disabled\)\.",
        "log",
        "4.53.0",
        None,
        "set generation_config.eos_token_id before generate_batch()",
    ),
    _entry(
        "TG151",
        "zero-shot pipeline tokenizer without pad",
        r"Tokenizer was not supporting padding necessary for zero-shot, attempting to use `pad_token=eos_token`",
        "log",
        "4.40.0",
        None,
        "set tokenizer.pad_token before building the pipeline",
    ),
    _entry(
        "TG152",
        "assistant model has a different tokenizer",
        r"The assistant model has a different tokenizer than the main model\. You should pass the assistant "
        r"tokenizer\.",
        "raise",
        "4.48.0",
        None,
        "pass assistant_tokenizer",
    ),
    _entry(
        "TG153",
        "seq2seq padding without pad_token_id",
        r"Pad_token_id must be set in the configuration of the model, in order to pad tensors",
        "raise",
        "4.40.0",
        None,
        "set model.config.pad_token_id",
    ),
    _entry(
        "TG154",
        "generate() missing a required special token",
        r"(?:`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder generation\.|"
        r"`bos_token_id` has to be defined when no `input_ids` are provided\.|If `eos_token_id` is defined, make "
        r"sure that `pad_token_id` is defined\.)",
        "raise",
        "4.40.0",
        None,
        "define the token in the generation config",
    ),
    _entry(
        "TG155",
        "padding to max_length without a maximum length",
        r"Asking to pad to max_length but no maximum length is provided and the model has no predefined maximum "
        r"length\. Default to no padding\.",
        "log",
        "4.40.0",
        "4.57.6",
        "pass max_length= when padding='max_length'",
    ),
    _entry(
        "TG156",
        "left padding not accounted for in chunked attention",
        r"we cannot correctly account for the left-padding when computing the chunked attention pattern",
        "log",
        "4.56.0",
        "4.57.6",
        "upgrade torch to >= 2.6 for left-padded chunked attention",
    ),
    _entry(
        "TG157",
        "eos_token_id passed to a decoding method",
        r"`eos_token_id` is deprecated in this function and will be removed in v4\.41",
        "log",
        "4.40.0",
        "4.40.2",
        "set model.generation_config.eos_token_id instead",
    ),
    # --- trl (TG160-TG169): accelerate-adapter records on trl.* loggers, or warnings.warn from trl modules ---
    _trl(
        "TG160",
        "trl: the end of turn is outside the assistant-only loss mask",
        r"The chat template does not include the assistant turn's end-of-turn token in the loss mask; the model "
        r"may not learn to stop\.",
        "log",
        "1.12.0",
        None,
        "put the end-of-turn token inside {% generation %}...{% endgeneration %} of the chat template (or set "
        "assistant_only_loss=False)",
    ),
    _trl(
        "TG161",
        "trl: the tokenized prompt is not a prefix of prompt+completion",
        r"The tokenized prompt is not a prefix of the tokenized prompt\+completion"
        r"(?:.*?left out of the training sequence: (?P<dropped>.*?)\. The model is trained)?",
        "log",
        "1.15.0",
        None,
        "make the prompt tokenize the same alone and followed by the completion: no eos/end of turn at the end of "
        "the prompt text, a chat template that renders the prompt alike, a prompt ending on a token boundary",
    ),
    _trl(
        "TG162",
        "trl: tokenized prompt and the start of prompt+completion mismatch",
        r"Mismatch between tokenized prompt and the start of tokenized prompt\+(?P<part>completion|chosen|rejected|"
        r"reference)\.",
        "log",
        "0.19.1",
        "1.14.0",
        "make the prompt tokenize the same alone and followed by the completion: no eos at the end of the prompt "
        "text, no special tokens added twice, a prompt ending on a token boundary",
    ),
    _trl(
        "TG163",
        "trl: new chat-template tokens, but lm_head is not trained",
        r"Cloning chat template added new tokens to the tokenizer, but 'lm_head' is not in PEFT's "
        r"`modules_to_save`\.",
        "log",
        "0.20.0",
        None,
        "add modules_to_save=['lm_head', 'embed_tokens'] to the LoraConfig (or reuse tokens the vocabulary has)",
    ),
    _trl(
        "TG164",
        "trl: the config's pad_token argument is deprecated",
        r"`pad_token` is deprecated and will be removed in v(?P<removal>[\d.]+)\. Set `tokenizer\.pad_token` "
        r"directly",
        "warnings",
        "1.12.0",
        None,
        "set tokenizer.pad_token and pass the tokenizer as processing_class instead of the config's pad_token",
    ),
    _trl(
        "TG165",
        "trl: the prompt alone fills max_length (empty completion)",
        r"The prompt alone fills `max_length`, so truncation leaves an empty completion\.",
        "log",
        "1.15.0",
        None,
        "raise max_length or filter out the long prompts: the completion (and its eos) is cut away",
    ),
    _trl(
        "TG166",
        "trl: completion-only collator with pad equal to eos",
        r"The pad_token_id and eos_token_id values of this tokenizer are identical\.",
        "warnings",
        "0.12.0",
        "0.19.1",
        "give the tokenizer a pad token distinct from eos before training (the collator masks every eos as padding)",
    ),
    _trl(
        "TG167",
        "trl: response or instruction template not found in an example",
        r"Could not find (?P<key>response|instruction) key `(?P<template>.*?)` in the following instance: "
        r".*?This instance will be ignored in loss calculation\.",
        "warnings",
        "0.12.0",
        "0.19.1",
        "tokenize the template as it appears inside the text (pass its token ids) and keep it within max_length",
    ),
    _trl(
        "TG168",
        "trl: the tokenizer has no eos token for packing",
        r"The passed tokenizer does not have an EOS token\. We will use the passed eos_token_id instead which "
        r"corresponds to (?P<eos>.*?)\. If this is not the correct EOS token",
        "warnings",
        "0.12.0",
        "0.12.2",
        "set tokenizer.eos_token before packing: sequences are joined with the passed id",
    ),
    _trl(
        "TG169",
        "trl: SFTTrainer got a tokenizer that does not pad on the right",
        r"You passed a processing_class with `padding_side` not equal to `right` to the SFTTrainer\.",
        "warnings",
        "0.12.0",
        "0.12.2",
        "set processing_class.padding_side = 'right' for training",
    ),
)

Severity = Literal["fault", "notice"]

#: What each message means for the model. A *fault* (the model, configs or inputs are wrong) fails the test;
#: a *notice* (a performance, initialisation or housekeeping hint) is recorded and fails only with
#: ``--tokenguard-strict``. code -> (severity, reason).
SEVERITIES: dict[str, tuple[Severity, str]] = {
    "TG100": ("fault", "an unclassified transformers warning about special tokens, padding or the mask: unknown is unsafe"),
    "TG101": ("fault", "the configs disagreed with the tokenizer: what was saved and tested differs from what trained"),
    "TG102": (
        "fault",
        "trl copied the tokenizer's ids onto the configs while building the trainer, silently: "
        "the model passed in disagreed with its tokenizer, and no TG101 follows at train()",
    ),
    "TG109": ("fault", "a child process ran unguarded: what it did to special tokens is unknown"),
    "TG110": ("fault", "generation pads with eos: batched rows stop or pad wrongly, and the generation config lacks pad"),
    "TG111": ("fault", "without a mask and pad id, padded positions are attended to: outputs depend on padding"),
    "TG112": ("fault", "pad equals eos, so real eos tokens are masked as padding"),
    "TG113": ("fault", "right padding in a decoder-only generate(): new tokens follow pad tokens"),
    "TG114": ("fault", "an invalid eos id: generation never stops"),
    "TG115": ("fault", "an invalid eos list: generation never stops"),
    "TG120": ("fault", "a negative pad id breaks batched generation"),
    "TG121": ("fault", "a special-token flag of the generation config is ignored"),
    "TG122": ("fault", "the generation config cannot be saved as it is"),
    "TG130": ("fault", "the generation config no longer matches the model config it came from"),
    "TG131": ("notice", "housekeeping: generation parameters belong in generation_config.json; generation still works"),
    "TG132": ("notice", "housekeeping: transformers moves generation attributes on save; the saved result is right"),
    "TG133": ("notice", "deprecation: generation is controlled through the model config; it still works today"),
    "TG134": ("fault", "generation ids silently replaced by the model's defaults"),
    "TG135": ("fault", "a special id the model cannot embed"),
    "TG136": ("fault", "the forced bos is missing: outputs start wrong"),
    "TG140": ("notice", "performance hint (Tensor Cores): the resize is correct without pad_to_multiple_of"),
    "TG141": ("notice", "initialisation note: new rows start from the mean embedding, which is the sound default"),
    "TG142": ("notice", "reminder that added special tokens need training; adding them is deliberate"),
    "TG143": ("fault", "padding requested without a pad token"),
    "TG144": ("fault", "the collator pads without a pad token"),
    "TG145": ("fault", "a pipeline cannot batch without a pad token"),
    "TG146": ("fault", "a special token is read while unset: code relies on a token that does not exist"),
    "TG147": ("fault", "inputs may be padded but no attention mask was passed"),
    "TG148": ("fault", "the tokenizer should add bos/eos but has none: sequences lack it"),
    "TG149": ("fault", "the tokenizer's special-token pattern needs a token that is not defined"),
    "TG150": ("fault", "continuous batching without eos: generation stops only at the length limit"),
    "TG151": ("fault", "zero-shot pipeline falls back to pad = eos"),
    "TG152": ("notice", "assisted generation translates between tokenizers; correct, slower"),
    "TG153": ("fault", "seq2seq padding without a pad id"),
    "TG154": ("fault", "generate() lacks a required special token (decoder start, bos)"),
    "TG155": ("fault", "padding to max_length without a maximum length"),
    "TG156": ("fault", "left padding is not accounted for: chunked attention sees padding"),
    "TG157": ("notice", "deprecation: eos_token_id passed to a decoding method; still honoured"),
    "TG160": ("fault", "no label is ever the end of turn: the model never learns to stop"),
    "TG161": ("fault", "the end of the prompt is cut out of the training sequence: training context differs from inference"),
    "TG162": ("fault", "the prompt tokenizes differently alone and with its completion: prompt and completion are split wrong"),
    "TG163": ("fault", "new tokens the template needs have untrained output rows: the model may never emit them"),
    "TG164": ("notice", "deprecation: the config's pad_token still works today"),
    "TG165": ("fault", "an empty completion: the example teaches nothing, not even eos"),
    "TG166": ("fault", "pad equals eos: the collator masks every eos, so the model never learns to stop"),
    "TG167": ("fault", "the template was not found: the example is dropped from the loss"),
    "TG168": ("fault", "packed sequences are separated by an id the tokenizer does not know as eos"),
    "TG169": ("notice", "half-precision overflow hint: training works with left padding"),
}


def severity(code: str) -> Severity:
    """``"fault"`` or ``"notice"`` for a runtime code (unknown codes are faults)."""
    return SEVERITIES.get(code, ("fault", ""))[0]


FALLBACK_TITLE = "other transformers warning about special tokens, attention mask or padding (or trl warning: also end of turn)"
FALLBACK_FIX = "read the message; align bos/eos/pad across model.config, generation_config and tokenizer"

BY_CODE: dict[str, Entry] = {entry.code: entry for entry in ENTRIES}

#: Every code a user may allow or expect.
RUNTIME_CODES: frozenset[str] = frozenset({FALLBACK_CODE, *BY_CODE})

#: The catch-all (TG100): a WARNING+ that names bos/eos/pad, special tokens, the mask or the padding side, or
#: (trl's words) the end of turn, a chat template's ``{% generation %}`` markers / blocks, stop tokens.
_TOKEN_MENTION = (
    r"\b(?:bos|eos|pad)(?:[ _]token(?:_id)?s?)?\b|special[ _]tokens?|attention[ _]mask|padding[ _]side"
    r"|end[- ]of[- ]turn|\{%-?\s*(?:end)?generation\s*-?%\}|\bgeneration (?:blocks?|markers?|tags?|keyword)\b"
    r"|\bstop(?:ping)?[ _]tokens?\b"
)

#: Cheap pre-filter: every catalog message mentions at least one of these words.
_KEYWORDS = ("token", "pad", "attention", "generation", "embedding", "eos", "bos", "turn", "completion", "instance")

#: Loggers whose records the guard watches. TG150 logs on a logger outside the transformers tree; trl logs on
#: ``trl.*`` (through accelerate's ``MultiProcessAdapter`` or plain ``logging.getLogger``).
WATCHED_ROOT = "transformers"
WATCHED_ROOTS = ("transformers", "trl")
WATCHED_EXTRA = frozenset({"ContinuousBatchingLogger"})


def _under(name: str) -> bool:
    for root in WATCHED_ROOTS:
        if name == root or name.startswith(root + "."):
            return True
    return False


def is_watched_logger(name: str) -> bool:
    return _under(name) or name in WATCHED_EXTRA


def is_watched_module(module: str) -> bool:
    return _under(module)


def is_trl(name: str) -> bool:
    """A ``trl`` logger or module name."""
    return name == "trl" or name.startswith("trl.")


@dataclass(frozen=True)
class Match:
    code: str
    title: str
    fix: str
    groups: dict[str, str]


def classify(message: str, level: int) -> Match | None:
    """Return the catalog match for a transformers message, or None when it is not token-related."""
    lowered = message.lower()
    if not any(word in lowered for word in _KEYWORDS):
        return None
    for entry in ENTRIES:
        if entry.observed and level >= entry.min_level:
            found = entry.compiled.search(message)
            if found:
                return Match(entry.code, entry.title, entry.fix, {k: v for k, v in found.groupdict().items() if v})
    if level >= logging.WARNING and re.search(_TOKEN_MENTION, message, re.IGNORECASE):
        return Match(FALLBACK_CODE, FALLBACK_TITLE, FALLBACK_FIX, {})
    return None


def parse_updated_tokens(text: str) -> dict[str, int | list[int] | None]:
    """Parse the "Updated tokens: {...}" payload of TG101 (a Python dict repr)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}
    return value if isinstance(value, dict) else {}


def trainer_fix_lines(updated: dict[str, int | list[int] | None]) -> list[str]:
    """Lines to put before building the Trainer so that it has nothing left to align."""
    lines: list[str] = []
    for name, value in updated.items():
        if value is None:
            token = name.removesuffix("_id")
            lines.append(
                f"# the tokenizer defines no {token}: transformers < 5.18 writes None over model.config.{name}; "
                f"set tokenizer.{token} or keep the config value and upgrade transformers"
            )
            continue
        shown = value[0] if isinstance(value, list) and value else value
        source = f"tokenizer.{name}"
        lines.append(f"model.config.{name} = {source}  # {shown}")
        if name == "eos_token_id":
            lines.append(f"model.generation_config.eos_token_id = [{source}, *other_stop_ids]  # keep {shown} in the list")
        else:
            lines.append(f"model.generation_config.{name} = {source}  # {shown}")
    return lines


def exists_in(entry: Entry, version: str, trl: str | None = None) -> bool:
    """Whether the entry's message exists: a transformers entry in transformers ``version``, a trl entry in trl
    ``trl`` (None: the installed trl, from its metadata; False when trl is not installed). first <= version <=
    last, releases compared.

    Raises ``packaging.version.InvalidVersion`` (a ``ValueError``) for text that is no version.
    """
    from pytest_tokenguard import versions

    if entry.library == "trl":
        if trl is None:
            trl = versions.installed_text("trl")
            if trl is None:
                return False
        return versions.in_range(versions.parse(trl), entry.first, entry.last)
    return versions.in_range(version, entry.first, entry.last)


def active_entries(version: str, trl: str | None = None) -> list[Entry]:
    """The catalog entries whose message exists in transformers ``version`` and trl ``trl`` (None: the
    installed trl; its entries are left out when trl is not installed)."""
    return [entry for entry in ENTRIES if exists_in(entry, version, trl)]


def classify_raised(message: str) -> str | None:
    """The code of a catalogued transformers *error* (channel ``raise``, e.g. TG122, TG145) whose message
    this exception carries, or None."""
    lowered = message.lower()
    if not any(word in lowered for word in _KEYWORDS):
        return None
    for entry in ENTRIES:
        if entry.channel == "raise" and entry.compiled.search(message):
            return entry.code
    return None
