"""The `tiny` base model: a few-million-parameter LLaVA (CLIP vision tower + Phi-3 decoder).

It is built from a config on the fly, with a tokenizer trained on the catalogue's own text, then
saved with `save_pretrained` and reloaded through `AutoModelForImageTextToText` + `AutoProcessor`
exactly like a hub checkpoint, so the training/evaluation code path is the one real presets use.
The build is cached under a hash of the architecture + tokenizer corpus: same inputs, same base.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PAD_TOKEN = "<pad>"
IMAGE_TOKEN = "<image>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
END_TOKEN = "<|end|>"
TINY_SPECIAL_TOKENS: tuple[str, ...] = (
    PAD_TOKEN,
    IMAGE_TOKEN,
    USER_TOKEN,
    ASSISTANT_TOKEN,
    END_TOKEN,
)

# Phi-3 style turns, TRL content lists (image/text parts). No newlines: special tokens already
# separate segments, so prompt + answer tokenises as prompt tokens followed by answer tokens.
TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<image>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


@dataclass(frozen=True)
class TinyArchitecture:
    """Sized so that a CPU with 2 cores trains the demo in minutes and still separates ~30
    categories by shape and colour: 64 image tokens (64 px / patch 8) and a 4-layer decoder.
    Measured on the demo set (300 steps): patch 16 (16 tokens) reached 11% category accuracy,
    patch 8 35% (for 2x the step time), 48 px / patch 8 11%; full fine-tuning of the decoder
    and a higher lr (5e-3) were worse than LoRA at 2e-3."""

    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    max_positions: int = 512
    vocab_size: int = 2048
    init_seed: int = 0


def train_tokenizer(
    corpus: Iterable[str], vocab_size: int, extra_special_tokens: Sequence[str] = ()
) -> Any:
    """Byte-level BPE on the catalogue text: any string still encodes (no <unk>), catalogue
    words become single tokens, and digits are split so prices are composed digit by digit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys([*TINY_SPECIAL_TOKENS, *extra_special_tokens]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=END_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=4096,
        padding_side="right",
    )


def tiny_cache_key(arch: TinyArchitecture, corpus: Sequence[str]) -> str:
    """Same architecture + same corpus = same base; anything else gets a fresh build."""
    digest = hashlib.sha256(json.dumps(asdict(arch), sort_keys=True).encode())
    for text in corpus:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def build_tiny_model(arch: TinyArchitecture, tokenizer: Any) -> Any:
    """Random init under a fixed seed, so a cache rebuild reproduces the same weights."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Phi3Config,
    )

    end_id = tokenizer.convert_tokens_to_ids(END_TOKEN)
    vision = CLIPVisionConfig(
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        hidden_size=arch.vision_hidden,
        intermediate_size=arch.vision_hidden * 2,
        num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads,
    )
    text = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=arch.text_hidden,
        intermediate_size=arch.text_hidden * 2,
        num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads,
        max_position_embeddings=arch.max_positions,
        original_max_position_embeddings=arch.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=end_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(arch.image_size // arch.patch_size) ** 2,
        # "default" drops CLS; the last layer, because a 2-layer tower has nothing to spare.
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream stays untouched
        torch.manual_seed(arch.init_seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = end_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_processor(arch: TinyArchitecture, tokenizer: Any) -> Any:
    import transformers
    from transformers import LlavaProcessor

    # The PIL backend needs no torchvision (absent on minimal boxes); older releases lack it.
    image_processor_cls = getattr(transformers, "CLIPImageProcessorPil", None)
    image_processor = (image_processor_cls or transformers.CLIPImageProcessor)(
        size={"shortest_edge": arch.image_size},
        crop_size={"height": arch.image_size, "width": arch.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=arch.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped again by "default"
        chat_template=TINY_CHAT_TEMPLATE,
    )


def default_cache_root() -> Path:
    return Path(os.environ.get("CATALOGUE_VLM_CACHE", Path.home() / ".cache" / "catalogue_vlm"))


def ensure_tiny_base(arch: TinyArchitecture, corpus: Sequence[str], cache_root: Path) -> Path:
    """Build (once) and save the tiny base like a hub snapshot; return its folder."""
    target = cache_root / f"tiny-{tiny_cache_key(arch, corpus)}"
    if (target / "config.json").exists():
        return target
    tokenizer = train_tokenizer(corpus, arch.vocab_size)
    model = build_tiny_model(arch, tokenizer)
    processor = build_tiny_processor(arch, tokenizer)
    tmp = cache_root / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "tiny_architecture.json").write_text(json.dumps(asdict(arch), indent=2))
    try:
        os.replace(tmp, target)
    except OSError:  # a concurrent build won the race: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target
