"""A model card (README.md) for every student folder the tool writes, so that a folder can be published as is:
what the model is, what it was distilled from, how it scores, how big and fast it is, and how to load it."""

from __future__ import annotations

from pathlib import Path

from adabert.core.fileio import atomic_write_bytes, read_json


def render_card(folder: Path, teacher: str, latency: dict | None = None, params: int | None = None,
                name: str | None = None) -> str:
    """Markdown from the folder's config.json and metrics.json; `latency` is a bench timing row, when known;
    `params` overrides the trained model's count (after vocabulary pruning); `name` is the folder's final name
    (when written into a temporary folder first)."""
    folder = Path(folder)
    cfg = read_json(folder / "config.json", "student config", expect=dict)
    metrics = read_json(folder / "metrics.json", "student metrics", expect=dict)
    task = cfg.get("task") or cfg.get("adabert", {}).get("task", {})
    kind = {"adabert-student": "searched AdaBERT student", "adabert-bilstm": "BiLSTM student"}.get(
        cfg.get("model_type"), "transformer student (a subset of the teacher's layers)")
    lines = [f"# {task.get('name', 'task')} student distilled with adabert", "",
             f"A {kind} for the task `{task.get('name')}` (text fields: {', '.join(task.get('text_fields', []))}; "
             + (f"labels: {', '.join(task.get('label_names') or task.get('labels') or [])})" if task.get("labels")
                else "a regression score)"),
             f"distilled from the teacher `{teacher}`.", ""]
    if "genotype" in metrics:
        lines += [f"Architecture: `{metrics['genotype']}` (`config.json` holds the full arch.json).", ""]
    lines += ["| dev metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in metrics.get("dev", {}).items()]
    lines += ["", f"Parameters: {params or metrics.get('params', 0):,}"
              + (f" (word table pruned to {cfg['embedding_rows']:,} rows)" if "embedding_rows" in cfg else "") + "."]
    if latency:
        lines += [f"Latency: {latency['latency_ms']:.2f} ms at batch {latency['batch']}, {latency['length']} tokens, "
                  f"{latency['threads']} CPU threads."]
    example = ", ".join(['"some text"'] * max(1, len(task.get("text_fields", []))))
    lines += ["", "## Use", "", "```python", "from adabert.deploy.predict import Predictor",
              f"labels, probabilities = Predictor({name or folder.name!r}).predict([({example},)])",
              "```", "", "or `adabert predict --student FOLDER --input FILE`; `adabert export` writes TorchScript and "
              "ONNX files (torch.export's .pt2 with `--format pt2`, compiled by AOTInductor with `--format aoti`).",
              ""]
    return "\n".join(lines)


def write_card(folder: Path, teacher: str, latency: dict | None = None, params: int | None = None,
               name: str | None = None) -> None:
    text = render_card(folder, teacher, latency, params, name)
    atomic_write_bytes(Path(folder) / "README.md", text.encode("utf-8"))
