"""What every part shares: params and their schema, the runtime (device, precision, seeds),
errors, atomic writes, the distortion metrics (training validates with the PSNR that evaluation
reports), and MLflow tracking (the only module that imports mlflow)."""
