"""Files a stage writes and reads: atomic writes, JSON, safetensors, fingerprints and `meta.json`.

Every stage writes its outputs through these helpers so that an interrupted run never leaves a half-written
file behind (write to a temporary file in the same folder, then `os.replace`), and writes `meta.json` last:
a stage folder without a matching `meta.json` is incomplete and is recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from safetensors import SafetensorError

from adabert import __version__
from adabert.core.errors import AdabertError

if TYPE_CHECKING:  # torch is imported where tensors are read or written, so the CLI's help starts fast
    import torch

META = "meta.json"
MAX_JSON_BYTES = 64 << 20  # configs, metas and arch files are kilobytes; a larger one is not ours


def member(folder: Path, name: str, what: str) -> Path:
    """folder/name, refusing a symbolic link that leads outside `folder` (a tampered model or cache folder)."""
    folder, path = Path(folder), Path(folder) / name
    if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
        raise AdabertError(f"{path}: {what} is a link to {path.resolve()}, outside {folder}; copy the file in")
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def _small_file(path: Path, what: str, max_bytes: int) -> Path:
    """`path` as a Path, if it is a file of at most `max_bytes`; else an `AdabertError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise AdabertError(f"{path}: {what} not found")
    if path.stat().st_size > max_bytes:
        raise AdabertError(f"{path}: {what} is {path.stat().st_size:,} bytes; expected at most {max_bytes:,}")
    return path


def read_json(path: Path, what: str = "JSON file", expect: type | None = None) -> Any:
    """Read a JSON file; a missing, oversized, malformed or too deeply nested file is an `AdabertError` naming
    it (and the line). With `expect` (dict or list), the top level must be of that type."""
    path = _small_file(path, what, MAX_JSON_BYTES)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise AdabertError(f"{path}: {what} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise AdabertError(f"{path}:{e.lineno}: {what} is not valid JSON ({e.msg})") from None
    except RecursionError:
        raise AdabertError(f"{path}: {what} is nested too deeply to be ours") from None
    if expect is not None and not isinstance(obj, expect):
        raise AdabertError(f"{path}: {what} must be a JSON {'object' if expect is dict else expect.__name__}, got "
                           f"{type(obj).__name__}")
    return obj


def read_yaml(path: Path, what: str, max_bytes: int = 1 << 20) -> Any:
    """Read a small YAML file (safe loader); a missing, oversized, malformed or too deeply nested file is an
    `AdabertError` naming it (and the line)."""
    import yaml

    path = _small_file(path, what, max_bytes)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else "?"
        raise AdabertError(f"{path}:{line}: {what} is not valid YAML ({e.problem})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise AdabertError(f"{path}: {what} is not valid YAML ({e})") from None
    except RecursionError:
        raise AdabertError(f"{path}: {what} is nested too deeply to be ours") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors (and string `metadata` in the file's header) as safetensors, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_tensors(path: Path, what: str = "tensor file") -> dict[str, torch.Tensor]:
    """Load a safetensors file (never a pickle); a missing or corrupt file is an `AdabertError`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise AdabertError(f"{path}: {what} not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AdabertError(f"{path}: {what} is not a readable safetensors file ({e})") from None


def state_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """How the tensors `state` differ from `model`'s own names and shapes, in a few words (None: they fit)."""

    def some(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    parts = [f"{what} {some(names)}" for what, names in
             (("missing", missing), ("unexpected", unexpected), ("other shapes for", reshaped)) if names]
    return "; ".join(parts) or None


def load_state(model: torch.nn.Module, path: Path, config: Path) -> None:
    """Load the safetensors weights at `path` into `model`, refusing names or shapes that differ from the model
    built from `config` (one-line error naming both files)."""
    import torch

    state = load_tensors(path, "student weights")
    diff = state_mismatch(model, state)
    if diff is not None:
        raise AdabertError(f"{path}: weights do not match the model described by {Path(config).name} ({diff})")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise AdabertError(f"{path}: tensor {bad!r} holds NaN or infinite values")
    model.load_state_dict(state)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; on success it replaces `final` whole."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def hash_files(paths: list[Path], extra: str = "") -> str:
    """sha256 over the bytes of `paths` (in order) and an extra string; first 16 hex digits."""
    h = hashlib.sha256(extra.encode("utf-8"))
    for p in paths:
        h.update(Path(p).name.encode("utf-8"))
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def hash_obj(obj: Any) -> str:
    """sha256 of the canonical JSON form of `obj`; first 16 hex digits."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def hash_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of `tensors` (sorted by name); first 16 hex digits."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode("utf-8"))
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def model_fingerprint(folder: Path) -> str:
    """Fingerprint of a saved model folder: its config and weight files."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.name == "config.json" or p.suffix == ".safetensors")
    return hash_files(files)


def write_meta(folder: Path, stage: str, inputs: dict[str, str], config: dict[str, Any]) -> None:
    """Write `meta.json`: stage name, package version, input fingerprints and the config used."""
    write_json(Path(folder) / META, {"stage": stage, "adabert_version": __version__, "inputs": inputs,
                                     "config": config})


def option_defaults(cfg: Any) -> dict[str, Any]:
    """The option defaults of a stage, from its config dataclass instance `cfg` (what `config_matches` takes)."""
    return dataclasses.asdict(type(cfg)())


def config_matches(recorded: Any, current: Any, defaults: dict[str, Any] | None = None) -> bool:
    """True when a recorded config equals `current` (compared as JSON). With `defaults` (the stage's option
    defaults), an option missing from the recorded config (one added to the package after the run) counts as equal
    when its value now is its default, so that adding an option invalidates neither finished runs nor
    checkpoints."""
    current = json.loads(json.dumps(current, default=str))
    if isinstance(recorded, dict) and isinstance(current, dict) and defaults:
        base = json.loads(json.dumps(defaults, default=str))
        recorded = {**{k: v for k, v in current.items() if k not in recorded and k in base and base[k] == v},
                    **recorded}
    return recorded == current


def meta_matches(folder: Path, stage: str, inputs: dict[str, str], config: dict[str, Any],
                 defaults: dict[str, Any] | None = None) -> bool:
    """True when `folder` holds a finished `stage` whose inputs and config equal the given ones (`config_matches`,
    with the stage's option `defaults`)."""
    path = Path(folder) / META
    if not path.is_file():
        return False
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return False
    if not isinstance(meta, dict):
        return False
    return (meta.get("stage") == stage and meta.get("inputs") == inputs
            and config_matches(meta.get("config"), config, defaults))
