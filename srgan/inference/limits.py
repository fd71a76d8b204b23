"""`srgan upscale`'s defaults and bounds, apart from the torch code so that the command line can
state them without importing torch (`srgan --help` starts fast)."""

DEFAULT_TILE = 256  # LR pixels: 16 blocks × 64 channels peak at about 1 GB in fp32 (0.5 GB in bf16)
# Below this, the context each tile recomputes (2·blocks + 8 px a side, 40 for the paper's
# model) outweighs the tile: a 32 px tile already does (32 + 80)² / 32² ≈ 12× the work.
MIN_TILE = 32
DEFAULT_MAX_OUTPUT_PIXELS = 100_000_000  # a 3000×2000 photo at ×4 is 96 MP
