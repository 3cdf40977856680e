"""The character-chat case: LoRA-training a tiny model with Qwen3-0.6B's exact special tokens.

Model config: bos 151643, eos 151645, pad None. Tokenizer: no bos, eos <|im_end|> 151645,
pad <|endoftext|> 151643. The Trainer silently rewrites model.config.pad_token_id; under
`pytest --tokenguard` that rewrite fails the test (TG101).
"""

from pytest_tokenguard.suite import zoo


def test_lora_training_raw_qwen3_layout(tmp_path):
    model, tokenizer = zoo.build("qwen3-0.6b")
    zoo.lora_train(model, tokenizer, tmp_path, steps=2)


def test_lora_training_aligned_qwen3_layout(tmp_path):
    model, tokenizer = zoo.build("qwen3-0.6b")
    # The fix: give the model config the tokenizer's pad before the Trainer is built.
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    zoo.lora_train(model, tokenizer, tmp_path, steps=2)
