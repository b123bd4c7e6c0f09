"""Offline building blocks for examples and tests: a character tokenizer and a tiny causal LM.

Nothing downloads: the tokenizer is built from a vocabulary given here (Hugging Face
``tokenizers``), the model from a ``transformers`` config with random weights.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["char_tokenizer", "tiny_causal_lm"]

SPECIALS = ("<pad>", "<eos>", "<bos>")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}a:{% endif %}"
)
"""A minimal chat template: ``"u:<content>\\n"`` per message, then ``"a:"`` to answer."""


def char_tokenizer(alphabet: str) -> Any:
    """A ``PreTrainedTokenizerFast`` with one token per character of ``alphabet`` (ids 3...),
    ``<pad>`` = 0, ``<eos>`` = 1, ``<bos>`` = 2, and :data:`CHAT_TEMPLATE` as chat template.
    The characters ``u a : \\n`` the template writes are added when missing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(alphabet + "ua:\n"))
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *chars])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )
    fast.padding_side = "left"
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_causal_lm(
    vocab_size: int, arch: str = "qwen2", hidden: int = 64, layers: int = 2, seed: int = 0
) -> nn.Module:
    """A ``transformers`` causal LM (``"qwen2"`` or ``"gpt2"``) with random weights, float32."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    special: dict[str, Any] = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
    if arch == "gpt2":
        cfg: Any = GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=4,
            n_positions=256,
            **special,
        )
        return GPT2LMHeadModel(cfg)
    if arch == "qwen2":
        cfg = Qwen2Config(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            **special,
        )
        return Qwen2ForCausalLM(cfg)
    raise ValueError(f"arch: expected 'qwen2' or 'gpt2', got {arch!r}")
