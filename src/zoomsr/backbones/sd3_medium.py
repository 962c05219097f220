"""SD3-medium's published shapes (stabilityai/stable-diffusion-3-medium-diffusers:
transformer/config.json, vae/config.json, text_encoder*/config.json, text_encoder_3's T5-XXL):
keyword arguments of the diffusers / transformers classes, for building the real-size model
with random weights or on the meta device (docs/memory_sd3.md, the memory benchmark). No
weights and no download."""

TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
    pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192,
)  # fmt: skip
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), norm_num_groups=32, shift_factor=0.0609,
    scaling_factor=1.5305, use_quant_conv=False, use_post_quant_conv=False,
)  # fmt: skip
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, projection_dim=768, hidden_act="quick_gelu")  # fmt: skip
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
              num_attention_heads=20, projection_dim=1280, hidden_act="gelu")  # fmt: skip
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
              vocab_size=32128, feed_forward_proj="gated-gelu")  # fmt: skip
