"""The networks (SRResNet/SRGAN generator, discriminator) and their checkpoint files; no training
logic."""
