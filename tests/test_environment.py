"""What `scripts/setup.sh` installs (no services)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path


def test_nothing_installed_shadows_the_standard_library() -> None:
    """A module in site-packages named like one of the standard library's is imported instead
    of it wherever site-packages comes first on the path (PYTHONPATH). PyPI's argparse 1.4,
    pulled in by nnU-Net's dependencies (batchgenerators, unittest2), broke pydantic-settings,
    and with it Prefect, so; scripts/setup.sh removes it."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    shadows = sorted(p.name for p in purelib.iterdir()
                     if (p.stem if p.suffix == ".py" else p.name) in sys.stdlib_module_names
                     and (p.suffix == ".py" or (p / "__init__.py").is_file()))
    assert not shadows, f"{shadows} in {purelib} shadow the standard library's; fix: " \
                        "`make setup` (it uninstalls them)"
    first = subprocess.run([sys.executable, "-c", "import prefect.settings, argparse; "
                            "print(argparse.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(purelib)},
                           capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    assert not first.stdout.strip().startswith(str(purelib)), first.stdout
