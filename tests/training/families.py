"""Tiny random instances of the hub presets' real architectures, saved like hub snapshots.

Each is built from its transformers config class (few layers, small widths) with a processor
assembled locally: a BPE tokenizer trained on the test corpus carrying the family's special
tokens, the family's real image-processor class (PIL backend) and a chat template in the
family's turn format. The preset then loads the folder through its own from_pretrained path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from training.tiny import train_tokenizer


def _turns(open_turn: str, close_turn: str, image: str, assistant: str, bos: str = "") -> str:
    """A chat template in a family's format: `open_turn + role`, the parts, `close_turn`."""
    return (
        bos + "{%- for message in messages -%}" + open_turn
        + "{{ '" + assistant + "' if message['role'] == 'assistant' else message['role'] }}\n"
        "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
        "{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' -%}" + image
        + "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}" + close_turn + "\n{%- endfor -%}"
        "{%- if add_generation_prompt -%}" + open_turn + assistant + "\n{%- endif -%}"
    )  # fmt: skip


def build_qwen3_vl(corpus: list[str], target: Path) -> Path:
    import transformers
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from training.hub_presets import qwen_vl_image_processor_class

    specials = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"]
    tokenizer = train_tokenizer(
        corpus, 512, specials, pad_token="<|endoftext|>", eos_token="<|im_end|>",
        named_tokens={"image_token": "<|image_pad|>"},
    )  # fmt: skip
    template = _turns(
        "<|im_start|>", "<|im_end|>", "<|vision_start|><|image_pad|><|vision_end|>", "assistant"
    )
    # 32 x 32 px: 2 x 2 patches of 16 px, merged 2 x 2 into one visual token.
    image_processor = transformers.Qwen2VLImageProcessorPil(
        size={"shortest_edge": 32 * 32, "longest_edge": 32 * 32},
        patch_size=16, merge_size=2, temporal_patch_size=2,
    )  # fmt: skip
    processor = qwen_vl_image_processor_class()(image_processor, tokenizer, template)
    ids = tokenizer.convert_tokens_to_ids
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6],
            "mrope_interleaved": True}  # fmt: skip
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 32, "rope_parameters": rope, "pad_token_id": tokenizer.pad_token_id,
            "max_position_embeddings": 1024,
        },
        vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
            "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "out_hidden_size": 64, "num_position_embeddings": 64, "deepstack_visual_indexes": [1],
        },
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )  # fmt: skip
    return _save(Qwen3VLForConditionalGeneration, config, processor, tokenizer, target)


def build_gemma3(corpus: list[str], target: Path) -> Path:
    import transformers
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor

    named = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
             "eoi_token": "<end_of_image>"}  # fmt: skip
    tokenizer = train_tokenizer(
        corpus, 512, ["<bos>", "<start_of_turn>"], pad_token="<pad>",
        eos_token="<end_of_turn>", named_tokens=named,
    )  # fmt: skip
    template = _turns("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "model", "<bos>")
    image_processor = transformers.Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    # 32 px / patch 8 = 4 x 4 patches, pooled to 2 x 2 = 4 soft tokens per image.
    processor = Gemma3Processor(image_processor, tokenizer, template, image_seq_length=4)
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 64,
            "pad_token_id": tokenizer.pad_token_id, "eos_token_id": ids("<end_of_turn>"),
            "bos_token_id": ids("<bos>"), "max_position_embeddings": 1024,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
        },
        mm_tokens_per_image=4, boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"), image_token_index=ids("<image_soft_token>"),
    )  # fmt: skip
    return _save(Gemma3ForConditionalGeneration, config, processor, tokenizer, target)


def _save(model_class: type, config: object, processor: object, tokenizer: object, target: Path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_class(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return target


def phi4_multimodal_module_names() -> list[str]:
    """Module names of a tiny random Phi4MultimodalForCausalLM (its processor needs
    torchvision, so only the model side is built here)."""
    from transformers import Phi4MultimodalConfig, Phi4MultimodalForCausalLM

    config = Phi4MultimodalConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                       "crop_size": 32},
        audio_config={"hidden_size": 32, "intermediate_size": 64, "num_blocks": 1,
                      "num_attention_heads": 2, "nemo_conv_channels": 8,
                      "depthwise_seperable_out_channel": 32, "ext_pw_out_channel": 32,
                      "depthwise_multiplier": 1, "kernel_size": 3, "time_reduction": 8},
    )  # fmt: skip
    return [name for name, _ in Phi4MultimodalForCausalLM(config).named_modules()]


BUILDERS: dict[str, Callable[[list[str], Path], Path]] = {
    "qwen3-vl": build_qwen3_vl,
    "gemma3": build_gemma3,
}
