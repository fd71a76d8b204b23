"""What every part shares: params and their schema, the runtime (device, precision, seeds),
errors, atomic writes, provenance, and the distortion metrics (training validates with the PSNR
that evaluation reports)."""
