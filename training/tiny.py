"""The `tiny` base model: a few-million-parameter LLaVA (CLIP vision tower + Phi-3 decoder).

It is built from a config on the fly, with a tokenizer trained on the catalogue's own text, then
saved with `save_pretrained` and reloaded through `AutoModelForImageTextToText` + `AutoProcessor`
exactly like a hub checkpoint, so the training/evaluation code path is the one real presets use.
The build is cached under a hash of the architecture + tokenizer corpus: same inputs, same base.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PAD_TOKEN = "<pad>"
IMAGE_TOKEN = "<image>"
END_TOKEN = "<|end|>"
# The tiny vocabulary's special tokens in id order, the Phi-3 chat turn markers among them.
TINY_SPECIAL_TOKENS = (PAD_TOKEN, IMAGE_TOKEN, "<|user|>", "<|assistant|>", END_TOKEN)

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
    """Sized so that a 2-core CPU trains the demo in minutes and still separates its 26
    categories by outline and pattern.

    A random tower that learns to see only through the caption loss is the bottleneck, so the
    build pretrains the tower as a category3 classifier on the train split: the stand-in for
    the pretrained checkpoint a real preset starts from. Patch 16 (16 image tokens) separates
    the categories as well as patch 8 at a quarter of the tokens, which also halves the
    decoder's sequence; 8 pretraining epochs is where the classifier stops improving.
    """

    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    max_positions: int = 512
    vocab_size: int = 2048
    init_seed: int = 0
    # Tower pretraining on (train image, category3): epochs over the train split (0 = random
    # tower), peak lr of its one-cycle schedule, batch size.
    vision_pretrain_epochs: float = 8.0
    vision_pretrain_lr: float = 3e-3
    vision_pretrain_batch: int = 64


def train_tokenizer(
    corpus: Iterable[str],
    vocab_size: int,
    extra_special_tokens: Sequence[str] = (),
    pad_token: str = PAD_TOKEN,
    eos_token: str = END_TOKEN,
    named_tokens: dict[str, str] | None = None,
) -> Any:
    """Byte-level BPE on the catalogue text: any string still encodes (no <unk>), catalogue
    words become single tokens, and digits are split so prices are composed digit by digit.
    pad/eos and the named tokens (tokenizer attributes such as `image_token`, which processors
    read) default to the tiny preset's; other model families pass their own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    named = named_tokens if named_tokens is not None else {"image_token": IMAGE_TOKEN}
    own = (pad_token, eos_token, *named.values(), *extra_special_tokens)
    specials = list(dict.fromkeys([*TINY_SPECIAL_TOKENS, *own]))
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
        pad_token=pad_token,
        eos_token=eos_token,
        extra_special_tokens=named,
        model_max_length=4096,
        padding_side="right",
    )


@dataclass(frozen=True)
class VisionPretrainData:
    """The train split's (image, category3) pairs, loaded only when a base is actually built;
    `key` names their content, so a cached base is reused only for the same pictures."""

    key: str
    load: Callable[[], Iterable[tuple[Any, str]]]


def tiny_cache_key(arch: TinyArchitecture, corpus: Sequence[str], data_key: str = "") -> str:
    """Same architecture + corpus + pretraining data = same base; else a fresh build."""
    digest = hashlib.sha256(json.dumps(asdict(arch), sort_keys=True).encode())
    digest.update(data_key.encode())
    for text in corpus:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class LlavaPhi3Dims:
    """The sizes of a LLaVA model made of a CLIP vision tower and a Phi-3 decoder: the tiny
    preset's, and the Phi-3-vision-sized stand-in the GPU benchmark builds."""

    image_size: int
    patch_size: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_heads: int
    vocab_size: int
    text_hidden: int
    text_intermediate: int
    text_layers: int
    text_heads: int
    max_positions: int
    pad_id: int
    image_id: int
    eos_id: int | None = None
    # -1 (the last layer) for a 2-layer tower with nothing to spare; LLaVA itself uses -2.
    vision_feature_layer: int = -1


# LlavaPhi3Dims' vision_* / text_* sizes -> the transformers config argument each sets.
_STACK_ARGS = {
    "hidden": "hidden_size",
    "intermediate": "intermediate_size",
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
}


def llava_phi3_config(dims: LlavaPhi3Dims) -> Any:
    """A LlavaConfig from sizes only: no hub, no weights."""
    from transformers import CLIPVisionConfig, LlavaConfig, Phi3Config

    # The tower and the decoder are both sized by width, MLP width, depth and heads.
    tower = {arg: getattr(dims, f"vision_{size}") for size, arg in _STACK_ARGS.items()}
    decoder = {arg: getattr(dims, f"text_{size}") for size, arg in _STACK_ARGS.items()}
    vision = CLIPVisionConfig(image_size=dims.image_size, patch_size=dims.patch_size, **tower)
    text = Phi3Config(
        vocab_size=dims.vocab_size,
        max_position_embeddings=dims.max_positions,
        original_max_position_embeddings=dims.max_positions,
        pad_token_id=dims.pad_id,
        bos_token_id=None,
        eos_token_id=dims.eos_id,
        **decoder,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=dims.image_id,
        image_seq_length=(dims.image_size // dims.patch_size) ** 2,
        # "default" drops CLS, as the processor's num_additional_image_tokens=1 expects.
        vision_feature_select_strategy="default",
        vision_feature_layer=dims.vision_feature_layer,
    )


def build_tiny_model(arch: TinyArchitecture, tokenizer: Any) -> Any:
    """Random init under a fixed seed, so a cache rebuild reproduces the same weights."""
    import torch
    from transformers import LlavaForConditionalGeneration

    end_id = tokenizer.convert_tokens_to_ids(END_TOKEN)
    dims = LlavaPhi3Dims(
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        vision_hidden=arch.vision_hidden,
        vision_intermediate=arch.vision_hidden * 2,
        vision_layers=arch.vision_layers,
        vision_heads=arch.vision_heads,
        vocab_size=len(tokenizer),
        text_hidden=arch.text_hidden,
        text_intermediate=arch.text_hidden * 2,
        text_layers=arch.text_layers,
        text_heads=arch.text_heads,
        max_positions=arch.max_positions,
        pad_id=tokenizer.pad_token_id,
        image_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        eos_id=end_id,
    )
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream stays untouched
        torch.manual_seed(arch.init_seed)
        model = LlavaForConditionalGeneration(llava_phi3_config(dims))
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


def pixel_tensor(image_processor: Any, images: Iterable[Any], chunk: int = 256) -> Any:
    """Preprocess once, in chunks (a list of 7k decoded PIL images would be ~0.8 GB); stored as
    fp16, cast back per batch: half the memory, no visible loss for normalised pixels."""
    import torch

    parts, pending = [], []
    for image in [*images, None]:
        if image is not None:
            pending.append(image.convert("RGB"))
        if pending and (image is None or len(pending) == chunk):
            pixels = image_processor(pending, return_tensors="pt")["pixel_values"]
            parts.append(pixels.to(torch.float16))
            pending = []
    return torch.cat(parts)


def pretrain_vision_tower(
    tower: Any, pixels: Any, labels: Sequence[str], arch: TinyArchitecture
) -> list[float]:
    """Category3 classification on the mean of the patch features the projector will see (CLS
    dropped, last layer, as `vision_feature_select_strategy="default"`): the tower then hands
    the decoder features that already separate the categories. Returns the loss per epoch."""
    import torch

    classes = {name: i for i, name in enumerate(sorted(set(labels)))}
    targets = torch.tensor([classes[name] for name in labels])
    hidden = tower.config.hidden_size
    head = torch.nn.Sequential(torch.nn.LayerNorm(hidden), torch.nn.Linear(hidden, len(classes)))
    params = [*tower.parameters(), *head.parameters()]
    n, batch = len(targets), arch.vision_pretrain_batch
    per_epoch = math.ceil(n / batch)
    steps = max(1, math.ceil(arch.vision_pretrain_epochs * per_epoch))
    optimizer = torch.optim.AdamW(params, lr=arch.vision_pretrain_lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=arch.vision_pretrain_lr, total_steps=steps, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(arch.init_seed)
    tower.train()
    losses: list[float] = []
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(n, generator=generator)
            losses.append(0.0)
        index = order[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        features = tower(pixel_values=pixels[index].float()).last_hidden_state[:, 1:].mean(1)
        # Smoothing: ~30 real products in the rarest class, so keep the logits modest.
        loss = torch.nn.functional.cross_entropy(
            head(features), targets[index], label_smoothing=0.1
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses[-1] += float(loss.detach()) / per_epoch
    tower.eval()
    return losses


def build_pretrained_tiny(
    arch: TinyArchitecture, corpus: Sequence[str], vision_data: VisionPretrainData | None
) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, random-init model and processor; then the tower pretraining, if any."""
    import torch

    tokenizer = train_tokenizer(corpus, arch.vocab_size)
    model = build_tiny_model(arch, tokenizer)
    processor = build_tiny_processor(arch, tokenizer)
    report: dict[str, Any] = {"vision_pretrain": None}
    if vision_data is not None and arch.vision_pretrain_epochs > 0:
        pairs = list(vision_data.load())
        pixels = pixel_tensor(processor.image_processor, (image for image, _ in pairs))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(arch.init_seed)
            losses = pretrain_vision_tower(
                model.model.vision_tower, pixels, [label for _, label in pairs], arch
            )
        report["vision_pretrain"] = {"images": len(pairs), "epoch_losses": losses}
    return model, processor, report


def ensure_tiny_base(
    arch: TinyArchitecture,
    corpus: Sequence[str],
    cache_root: Path,
    vision_data: VisionPretrainData | None = None,
) -> Path:
    """Build (once) and save the tiny base like a hub snapshot; return its folder."""
    data_key = vision_data.key if vision_data is not None and arch.vision_pretrain_epochs else ""
    target = cache_root / f"tiny-{tiny_cache_key(arch, corpus, data_key)}"
    if (target / "config.json").exists():
        return target
    model, processor, report = build_pretrained_tiny(arch, corpus, vision_data)
    tmp = cache_root / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "tiny_architecture.json").write_text(json.dumps({**asdict(arch), **report}, indent=2))
    try:
        os.replace(tmp, target)
    except OSError:  # a concurrent build won the race: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def vision_pretrain_data(train: Any) -> VisionPretrainData:
    """The train split's (image, category3) pairs for the tiny tower's pretraining, keyed by a
    hash of the encoded image bytes and labels (cheap: nothing is decoded to compute it).
    Validation and test are never touched."""
    import datasets

    raw = train.select_columns(["image", "category3_code"]).cast_column(
        "image", datasets.Image(decode=False)
    )
    digest = hashlib.sha256()
    for row in raw:
        digest.update(row["image"]["bytes"] or str(row["image"]["path"]).encode())
        digest.update(f"\0{row['category3_code']}\0".encode())

    def load() -> Any:
        columns = train.select_columns(["image", "category3_code"])
        return ((row["image"], row["category3_code"]) for row in columns)

    return VisionPretrainData(key=digest.hexdigest(), load=load)
