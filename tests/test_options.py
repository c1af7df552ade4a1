"""Options declared once (config dataclass fields -> flags), --config files, and the options.yaml every run keeps."""

import json
from dataclasses import fields

import pytest
import torch
import yaml
from conftest import run_cli

from adabert.cli import build_parser, parse_args
from adabert.core.errors import AdabertError
from adabert.core.runtime import resolve_device
from adabert.distill.distill import DistillConfig
from adabert.nas.config import SearchConfig
from adabert.students.finetune import FinetuneConfig
from adabert.teacher.augment import AugmentConfig
from adabert.teacher.model import TeacherConfig
from adabert.teacher.probes import ProbeConfig

STAGE_CONFIGS = {"teacher": TeacherConfig, "probes": ProbeConfig, "augment": AugmentConfig, "distill": DistillConfig,
                 "search": SearchConfig, "finetune": FinetuneConfig}


@pytest.mark.parametrize("stage", sorted(STAGE_CONFIGS))
def test_every_config_field_is_a_documented_flag(stage):
    parser = build_parser().stages[stage]
    by_option = {o: a for a in parser._actions for o in a.option_strings}
    help_text = parser.format_help()
    for f in fields(STAGE_CONFIGS[stage]):
        flag = "--" + f.name.replace("_", "-")
        assert f.metadata.get("help"), f"{stage}: field {f.name} has no help text"
        assert flag in by_option and by_option[flag].dest == f.name
        assert flag in help_text
        if "_" in f.name:  # both spellings parse; help lists the dashed one only
            assert "--" + f.name in by_option and "--" + f.name not in help_text


def test_config_file_sets_options_and_flags_override_it(tiny_teacher, sst2_dir, tmp_path, capsys):
    config = tmp_path / "probes.yaml"
    config.write_text(f"task: sst2\ndata-dir: {sst2_dir}\nteacher: {tiny_teacher}\nepochs: 1\nbatch_size: 16\n"
                      f"lr: 1e-2\nmax-length: 32\n")
    out = tmp_path / "probes"
    code, _, err = run_cli(["probes", "--config", config, "--epochs", 2, "--output-dir", out], capsys)
    assert code == 0, err
    used = json.loads((out / "meta.json").read_text())["config"]
    assert (used["epochs"], used["batch_size"], used["lr"], used["max_length"]) == (2, 16, 0.01, 32)
    saved = yaml.safe_load((out / "options.yaml").read_text())
    assert saved["epochs"] == 2 and saved["batch_size"] == 16 and saved["teacher"] == str(tiny_teacher)
    # the kept options repeat the run: same parsed options, and the finished run is recognised as up to date
    first = vars(parse_args(build_parser(), ["probes", "--config", str(config), "--epochs", "2", "--output-dir",
                                             str(out)]))
    stamp = (out / "meta.json").stat().st_mtime_ns
    code, _, err = run_cli(["probes", "--config", out / "options.yaml"], capsys)
    assert code == 0, err
    assert (out / "meta.json").stat().st_mtime_ns == stamp
    assert {k: str(v) for k, v in yaml.safe_load((out / "options.yaml").read_text()).items()} == {
        k: str(v) for k, v in first.items() if k not in ("func", "config", "command")}


@pytest.mark.parametrize("text, message", [
    ("epochs: [1, 2]\n", "cfg.yaml: epochs: expected a single value"),
    ("epochs: three\n", "cfg.yaml: epochs: expected int, got 'three'"),
    ("epochs: 2.5\n", "cfg.yaml: epochs: expected int"),
    ("cost: watts\n", "cfg.yaml: cost: expected one of params, flops, latency_ms"),
    ("force: maybe\n", "cfg.yaml: force: expected true or false"),
    ("epochz: 2\n", "cfg.yaml: unknown option 'epochz' for `adabert search`"),
    ("- epochs\n- 2\n", "cfg.yaml: config file must map option names to values"),
    ("epochs: [2\n", "cfg.yaml:2: config file is not valid YAML"),
    ("!!python/object/apply:os.system ['echo hi']\n", "config file is not valid YAML"),
    (None, "cfg.yaml: config file not found"),
])
def test_bad_config_files_give_one_line_and_exit_2(text, message, tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    if text is not None:
        config.write_text(text)
    code, out, err = run_cli(["search", "--config", config, "--task", "sst2", "--teacher", "t", "--probes", "p",
                              "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_required_options_may_come_from_the_config_file(tmp_path):
    config = tmp_path / "search.yaml"
    config.write_text("task: sst2\nteacher: t\nprobes: p\noutput_dir: out\nshare_cells: true\ntarget-params: 2e5\n")
    args = parse_args(build_parser(), ["search", "--config", str(config), "--beta", "0.5"])
    assert (args.task, args.teacher, str(args.output_dir), args.share_cells, args.target_params, args.beta) == (
        "sst2", "t", "out", True, 2e5, 0.5)


def test_a_repeatable_flag_replaces_the_config_files_list(tmp_path):
    config = tmp_path / "study.yaml"  # what a study's options.yaml keeps after a run with --searched-arch a.json
    config.write_text("arch: s.json\nteacher: t\nprobes: p\ntask: sst2\noutput_dir: o\nsearched_arch: [a.json]\n"
                      "cross_arch: [c.json]\n")
    parser = build_parser()
    args = parse_args(parser, ["study", "--config", str(config), "--searched-arch", "a.json", "--searched-arch",
                               "b.json"])
    assert [str(p) for p in args.searched_arch] == ["a.json", "b.json"]  # not a.json twice
    assert [str(p) for p in args.cross_arch] == ["c.json"]  # not given: the file's list
    args = parse_args(build_parser(), ["study", "--arch", "s.json", "--teacher", "t", "--probes", "p", "--task",
                                       "sst2", "--output-dir", "o", "--cross-arch", "x.json", "--cross-arch", "y.json"])
    assert [str(p) for p in args.cross_arch] == ["x.json", "y.json"] and args.searched_arch == []


def test_flag_types_follow_the_field_annotations(capsys):
    parser = build_parser()
    base = ["--arch", "a.json", "--teacher", "t", "--probes", "p", "--task", "sst2", "--output-dir", "o"]
    args = parse_args(parser, ["finetune", *base])
    assert (args.inherit, args.embeddings, args.lr, args.epochs) == (False, "projected", 2e-3, 5)
    args = parse_args(parser, ["finetune", *base, "--inherit", "--embeddings", "table", "--lr", "1e-3"])
    assert (args.inherit, args.embeddings, args.lr) == (True, "table", 1e-3)
    assert parse_args(parser, ["finetune", *base, "--inherit", "false", "--max_length", "32"]).inherit is False
    assert parse_args(parser, ["finetune", *base, "--max_length", "32"]).max_length == 32
    distill = ["distill", "--teacher", "t", "--task", "sst2", "--output-dir", "o"]
    assert parse_args(parser, distill).lr is None                      # float | None: unset until validated
    assert parse_args(parser, [*distill, "--kd-beta", "0.5"]).kd_beta == 0.5
    for bad, message in [(["--inherit", "maybe"], "--inherit: expected true or false, got 'maybe'"),
                         (["--embeddings", "big"], "--embeddings: invalid choice: 'big'"),
                         (["--epochs", "2.5"], "--epochs: invalid int value: '2.5'")]:
        with pytest.raises(SystemExit) as e:
            parse_args(parser, ["finetune", *base, *bad])
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_device_defaults_to_the_gpu_when_there_is_one(monkeypatch):
    args = parse_args(build_parser(), ["search", "--teacher", "t", "--probes", "p", "--task", "sst2",
                                       "--output-dir", "o"])
    assert args.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(args.device) == torch.device("cpu")
    with pytest.raises(AdabertError, match="--device: cuda requested but no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(args.device) == torch.device("cuda")
    with pytest.raises(AdabertError, match="expected cpu, cuda, cuda:N or auto, got 'gpu'"):
        resolve_device("gpu")
