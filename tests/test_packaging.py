"""A non-editable install (a wheel in a fresh virtual environment) finds the built-in search spaces."""

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_with_the_search_spaces(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    tmp_path / "dist", ROOT], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("adabert-*.whl"))
    # the new environment borrows torch and the other dependencies from this one (a path file naming this
    # interpreter's site-packages, which works when this one is itself a virtual environment); only adabert is
    # installed, and the new environment's own site-packages comes first
    subprocess.run([sys.executable, "-m", "venv", tmp_path / "venv"], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    borrowed = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "borrowed.pth").write_text("".join(f"{path}\n" for path in borrowed))
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", wheel], check=True, capture_output=True)
    probe = ("import adabert; from adabert.nas.search_space import BUILTIN_DIR, load_search_space; "
             "print(adabert.__file__); print(BUILTIN_DIR); print(load_search_space('adabert').max_cells)")
    out = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    module, builtin, cells = out.split()
    assert str(tmp_path / "venv") in module  # the wheel's copy, not this checkout
    assert builtin.startswith(str(tmp_path / "venv")) and cells == "8"
