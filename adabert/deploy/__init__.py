"""Using a saved student: prediction and evaluation, TorchScript / ONNX / .pt2 export with parity checks, benchmarks."""
