"""Using a saved student: prediction and evaluation, TorchScript / ONNX export with parity checks, benchmarks."""
