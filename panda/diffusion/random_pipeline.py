"""Randomly initialised text-to-image pipelines, saved in diffusers format, for the latent backend.

The latent backend loads a pretrained checkpoint through `finetune.pretrained`. Tests and the cost
benchmark need one without a model hub: these builders make a Stable Diffusion (CLIP text encoder) or
CompVis LDM (LDMBert text encoder) pipeline from configs, with a tokenizer made from a small word
list, and `save_pretrained` it, so loading takes exactly the path a downloaded checkpoint takes.
`size="tiny"` runs in milliseconds on a CPU; `size="sd15"` has Stable Diffusion 1.5's architecture
(an 860M-parameter UNet, a 123M CLIP text encoder, the f8 KL autoencoder): weights are random, but the
architecture is what costs.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = (
    "anomaly",
    "defect",
    "crack",
    "scratch",
    "hole",
    "stain",
    "broken",
    "large",
    "small",
    "contamination",
)
SIZES = ("tiny", "sd15")


def _clip_tokenizer(words: tuple[str, ...]):
    """A CLIP BPE tokenizer that knows single letters and `words` (each one token)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    merges: list[tuple[str, str]] = []

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for c in "abcdefghijklmnopqrstuvwxyz":
        add(c)
        add(c + "</w>")
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            if (symbols[0], symbols[1]) not in merges:
                merges.append((symbols[0], symbols[1]))
            symbols = [symbols[0] + symbols[1], *symbols[2:]]
            add(symbols[0])
    return CLIPTokenizer(vocab=vocab, merges=merges)


def _bert_tokenizer(words: tuple[str, ...]):
    from transformers import BertTokenizer

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", *words]
    return BertTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(tokens))})


def _unet(size: str, cross_dim: int, resolution: int):
    from diffusers import UNet2DConditionModel

    if size == "sd15":  # Stable Diffusion 1.5's UNet (diffusers' defaults are its layout)
        return UNet2DConditionModel(sample_size=resolution // 8, cross_attention_dim=cross_dim)
    return UNet2DConditionModel(
        sample_size=resolution // 8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def _vae(size: str, resolution: int, vq: bool = False):
    from diffusers import AutoencoderKL, VQModel

    widths, layers, groups = ((128, 256, 512, 512), 2, 32) if size == "sd15" else ((8, 8, 16, 16), 1, 8)
    if vq:
        return VQModel(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=widths,
            layers_per_block=layers,
            latent_channels=4,
            num_vq_embeddings=256,
            norm_num_groups=groups,
            sample_size=resolution,
        )
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=widths,
        layers_per_block=layers,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=resolution,
    )


def save_random_pipeline(
    folder: Path,
    kind: str = "sd",
    size: str = "tiny",
    resolution: int = 64,
    seed: int = 0,
    words: tuple[str, ...] = WORDS,
    vq: bool = False,
) -> Path:
    """Build a random `kind` ("sd": Stable Diffusion, "ldm": CompVis LDM) pipeline and save it to `folder`;
    `vq`: a VQ autoencoder (LDM's other first stage) instead of the KL one."""
    from diffusers import DDIMScheduler

    if kind not in ("sd", "ldm") or size not in SIZES:
        raise ValueError(f"kind must be sd or ldm and size one of {SIZES}")
    torch.manual_seed(seed)
    big = size == "sd15"
    cross_dim = 768 if big else 32
    unet, vae = _unet(size, cross_dim, resolution), _vae(size, resolution, vq)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    if kind == "sd":
        from diffusers import StableDiffusionPipeline
        from transformers import CLIPTextConfig, CLIPTextModel

        layers = 12 if big else 2
        tokenizer = _clip_tokenizer(words)
        config = CLIPTextConfig(
            vocab_size=49408 if big else len(tokenizer),
            hidden_size=cross_dim,
            intermediate_size=4 * cross_dim,
            num_hidden_layers=layers,
            num_attention_heads=12 if big else 4,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
        pipeline = StableDiffusionPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(config),
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        from diffusers import LDMTextToImagePipeline
        from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

        tokenizer = _bert_tokenizer(words)
        config = LDMBertConfig(
            vocab_size=30522 if big else len(tokenizer),
            max_position_embeddings=77,
            encoder_layers=32 if big else 2,
            encoder_ffn_dim=4 * 1280 if big else 4 * cross_dim,
            encoder_attention_heads=8 if big else 4,
            head_dim=64 if big else 8,
            d_model=1280 if big else cross_dim,
        )
        if big:  # the CompVis LDM conditions on 1280-wide LDMBert states
            unet = _unet(size, 1280, resolution)
        pipeline = LDMTextToImagePipeline(
            vqvae=vae, bert=LDMBertModel(config), tokenizer=tokenizer, unet=unet, scheduler=scheduler
        )
    pipeline.save_pretrained(folder)
    return Path(folder)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Save a random-weight text-to-image pipeline (finetune.pretrained without a hub)."
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--kind", choices=("sd", "ldm"), default="sd")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--vq", action="store_true", help="a VQ autoencoder (ldm only)")
    args = parser.parse_args()
    print(save_random_pipeline(args.folder, args.kind, args.size, args.resolution, vq=args.vq))
