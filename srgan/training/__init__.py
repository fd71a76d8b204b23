"""The pretrain (SRResNet, MSE) and train (SRGAN) stages: losses, step functions, the loop, and the
multi-process set-up."""
