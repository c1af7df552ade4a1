"""`adabert export`: TorchScript, ONNX and torch.export (`.pt2`) files of any saved student, with dynamic batch and
length, checked for parity against PyTorch; the tokenizer and config are copied beside them so prediction needs
nothing else. TorchScript is deprecated from torch 2.13 on; `.pt2` (an `ExportedProgram`, loaded with
`torch.export.load(path).module()`) is its successor in PyTorch and what `torch.compile` and AOTInductor take; it
is written on request (`--format pt2`), for every kind but the BiLSTM, whose LSTM torch.export unrolls over the
example's length. A loaded `.pt2` runs at eager speed; TorchScript and ONNX Runtime are faster at batch 1.
`--format aoti` compiles that program with AOTInductor into `model.aoti.pt2`, native code for the CPU kind it was
compiled on (a C++ compiler needed; 25-45 s on 2 threads), loaded with
`torch._inductor.aoti_load_package(path)`: the fastest of the four for the searched students
(`scripts/bench_export.py`, docs/benchmarks.md).

Exported signature (`adabert.students.load`): (input_ids [B, T] int64, attention_mask [B, T] int64) for
single-sentence tasks, plus (input_ids_b, attention_mask_b) for pairs, or (input_ids, attention_mask,
token_type_ids) for the transformer student -> logits [B, C].

int8 (`--int8`): beside each TorchScript and ONNX file, a dynamically quantised one (int8 weights, activations
quantised per batch): TorchScript of `quantize.int8_dynamic` (checked against that PyTorch int8 module within
`atol`), and ONNX quantised by onnxruntime's dynamic quantiser (`INT8_OPS`: embedding tables, matrix products and LSTMs;
7-bit weights, so that CPUs without VNNI do not saturate; checked against the float PyTorch outputs within
`INT8_TOL * (1 + max |logit|)`, since it rounds other weights than PyTorch's does). Both report their largest
difference from the float model. Convolutions stay float: ONNX Runtime's integer convolution made the searched
student 2x slower (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from adabert.core.errors import AdabertError
from adabert.core.fileio import write_json
from adabert.students.load import load_student

FORMATS = ("torchscript", "onnx", "pt2", "aoti")
DEFAULT_FORMATS = ("torchscript", "onnx")
INT8_FORMATS = ("torchscript", "onnx")
INT8_TOL = 0.05
INT8_OPS = ["Gather", "MatMul", "Gemm", "LSTM"]


def export_torchscript(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    tmp = path.with_suffix(".tmp")
    traced.save(str(tmp))
    tmp.replace(path)


def _dynamic_shapes(names: list[str], longest: int | None) -> dict:
    """Every input [B, T] with the same dynamic batch B and length T, 2 <= T <= `longest` (the rows of the
    student's position table; None: 4096). torch.export specialises a length of 1."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=2, max=longest or 4096)
    return {n: {0: batch, 1: length} for n in names}


def exported_program(module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str],
                     longest: int | None = None) -> torch.export.ExportedProgram:
    with torch.no_grad():
        return torch.export.export(module, example, dynamic_shapes=_dynamic_shapes(names, longest), strict=False)


def export_pt2(program: torch.export.ExportedProgram, path: Path) -> None:
    tmp = path.with_suffix(".tmp.pt2")
    torch.export.save(program, str(tmp))
    tmp.replace(path)


def run_pt2(path: Path, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return torch.export.load(str(path)).module()(*inputs)


def check_cpp_compiler() -> None:
    """AOTInductor's C++ compiler (g++ or clang++, or $CXX) must exist; a one-line error otherwise."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        compiler = get_cpp_compiler()
    except Exception as e:  # inductor raises its own error types when it finds no compiler
        raise AdabertError(f"the aoti export needs a C++ compiler (g++ or clang++; or set CXX): {e}") from None
    if shutil.which(compiler) is None:
        raise AdabertError(f"the aoti export needs a C++ compiler: {compiler!r} is not on PATH (install g++, or set "
                           "CXX)")


def export_aoti(program: torch.export.ExportedProgram, path: Path) -> None:
    """Compile the program ahead of time with AOTInductor into a package of native code for this machine's CPU
    (or GPU) kind; needs a C++ compiler (`check_cpp_compiler`)."""
    from torch._inductor import aoti_compile_and_package

    tmp = path.with_suffix(".tmp.pt2")
    with torch.no_grad(), warnings.catch_warnings():
        # torch's own deprecation notes from inside the compiler (pytree specs) say nothing to a user
        warnings.simplefilter("ignore", FutureWarning)
        # no precompiled header: it pays off only from the third compile on a machine (cold, a first one took 45 s
        # with it and 25 s without, on 2 threads)
        aoti_compile_and_package(program, package_path=str(tmp),
                                 inductor_configs={"aot_inductor.precompile_headers": False})
    tmp.replace(path)


def run_aoti(path: Path, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    from torch._inductor import aoti_load_package

    with torch.no_grad():
        return aoti_load_package(str(path))(*inputs)


def export_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], path: Path,
                longest: int | None = None) -> None:
    shapes = _dynamic_shapes(names, longest)
    tmp = path.with_suffix(".tmp.onnx")
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    try:
        # the exporter's notes (no torchvision ops, axis renaming, deprecations) say nothing to a user; the
        # parity check below says whether the export is right
        onnx_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, str(tmp), input_names=names, output_names=["logits"],
                              dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False)
    except ImportError as e:
        raise AdabertError(f"ONNX export needs the packages onnx and onnxscript ({e}); "
                           "pip install 'adabert[export]'") from None
    finally:
        onnx_log.setLevel(level)
    tmp.replace(path)


def run_onnx(path: Path, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    try:
        import onnxruntime as ort
    except ImportError:
        raise AdabertError("the ONNX parity check needs onnxruntime; pip install 'adabert[export]'") from None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return torch.from_numpy(sess.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0])


def quantize_onnx(source: Path, path: Path, reduce_range: bool = True) -> None:
    """Dynamic int8 quantisation of an ONNX file with onnxruntime (weights int8, activations per batch).
    `reduce_range=False` (full 8-bit weights) exists only to measure what 7 bits cost (scripts/bench_onnx_int8.py)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".tmp.onnx")
    ort_log = logging.getLogger()  # the quantiser logs advice about pre-processing on the root logger
    level = ort_log.level
    try:
        ort_log.setLevel(logging.ERROR)
        # reduce_range: 7-bit weights, because x86 CPUs without VNNI add pairs of u8*s8 products in int16 and
        # saturate with 8-bit weights (a 16-wide head was off by a third of its logit range before this)
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS,
                         reduce_range=reduce_range)
    finally:
        ort_log.setLevel(level)
    tmp.replace(path)


def _int8_exports(module: nn.Module, student, output_dir: Path, formats: list[str], check: tuple,
                  reference: torch.Tensor, atol: float) -> dict:
    from adabert.deploy.quantize import int8_dynamic

    q = int8_dynamic(module)
    with torch.no_grad():
        q_reference = q(*check)
    tol = INT8_TOL * (1 + float(reference.abs().max()))
    result = {}
    for f in (f for f in formats if f in INT8_FORMATS):
        if f == "torchscript":
            path = output_dir / "model.int8.torchscript.pt"
            export_torchscript(q, student.random_inputs(2, 16), path)
            with torch.no_grad():
                got = torch.jit.load(str(path))(*check)
            diff, bound, against = float((got - q_reference).abs().max()), atol, "the PyTorch int8 model"
        else:
            path = output_dir / "model.int8.onnx"
            quantize_onnx(output_dir / "model.onnx", path)
            got = run_onnx(path, check)
            diff, bound, against = float((got - reference).abs().max()), tol, "the float model"
        if not diff <= bound:
            raise AdabertError(f"{path}: int8 outputs differ from {against} by {diff:.2e} (> {bound:.1e})")
        result[f"{f}-int8"] = {"path": str(path), "max_abs_diff": float((got - reference).abs().max()),
                               "tolerance": bound, "checked_against": against}
    return result


def export_student(folder: Path, output_dir: Path, formats: Sequence[str] | None = None, atol: float = 1e-4,
                   int8: bool = False) -> dict:
    """Export the student in `folder`; check parity on inputs of another batch size and length than the
    example used for export (`formats` None: DEFAULT_FORMATS). Returns {format: {"path", "max_abs_diff"}}
    (max_abs_diff against the float PyTorch model), with "FORMAT-int8" entries for TorchScript and ONNX when `int8`."""
    formats = list(formats or DEFAULT_FORMATS)
    for f in formats:
        if f not in FORMATS:
            raise AdabertError(f"--format: expected {' or '.join(FORMATS)}, got {f!r}")
    if int8 and not set(formats) & set(INT8_FORMATS):
        raise AdabertError(f"--int8: int8 files are written for {' and '.join(INT8_FORMATS)} only; add --format "
                           f"{' or --format '.join(INT8_FORMATS)}")
    student = load_student(Path(folder))
    through_export = [f for f in formats if f in ("pt2", "aoti")]
    if through_export and student.kind == "bilstm":
        raise AdabertError(f"{folder}: --format {through_export[0]}: torch.export unrolls the BiLSTM over a fixed "
                           "length, so the file would take one input length only; use --format torchscript or onnx")
    if "aoti" in formats:
        check_cpp_compiler()
    module = student.module
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    example = student.random_inputs(2, 16)
    check = student.random_inputs(5, 37, seed=1)
    with torch.no_grad():
        reference = module(*check)
    result, program = {}, None
    for f in formats:
        if f == "torchscript":
            path = output_dir / "model.torchscript.pt"
            export_torchscript(module, example, path)
            with torch.no_grad():
                got = torch.jit.load(str(path))(*check)
        elif f in ("pt2", "aoti"):
            program = program or exported_program(module, example, student.input_names, student.positions)
            write, run, path = ((export_pt2, run_pt2, output_dir / "model.pt2") if f == "pt2"
                                else (export_aoti, run_aoti, output_dir / "model.aoti.pt2"))
            write(program, path)
            got = run(path, check)
        else:
            path = output_dir / "model.onnx"
            export_onnx(module, example, student.input_names, path, student.positions)
            got = run_onnx(path, check)
        diff = float((got - reference).abs().max())
        if diff > atol:
            raise AdabertError(f"{path}: exported outputs differ from PyTorch by {diff:.2e} (> {atol:.0e})")
        result[f] = {"path": str(path), "max_abs_diff": diff}
    if int8:
        result.update(_int8_exports(module, student, output_dir, formats, check, reference, atol))
    for p in Path(folder).iterdir():
        if p.name.startswith("tokenizer") or p.name in ("config.json", "vocab.txt", "special_tokens_map.json"):
            shutil.copy(p, output_dir / p.name)
    write_json(output_dir / "export.json", {"kind": student.kind, "inputs": student.input_names,
                                            "outputs": ["logits"], "formats": result})
    return result
