"""srgan: a reproducible SRGAN super-resolution pipeline (Ledig et al. 2017) with DVC and MLflow."""

__version__ = "0.1.0"
