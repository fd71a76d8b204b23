"""Using a trained generator: whole images and tiles (`srgan upscale`, and evaluation), and ONNX
export."""
