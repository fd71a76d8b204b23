"""Measuring upscalers: PSNR/SSIM/MSE under named conventions, NIQE, and the evaluate stage's
reports."""
