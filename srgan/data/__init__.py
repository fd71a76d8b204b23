"""From sources to training batches: download, image decoding and writing, MATLAB-compatible
bicubic, LR/HR patch shards, and the batch loader over them."""
