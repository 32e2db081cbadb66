"""Shared helper of the tests that start a real ``mpiexec`` (the ``mpich`` wheel's, next to the venv's
Python, else the first on PATH)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def mpiexec_path() -> str:
    """Path of ``mpiexec``; skips the test when mpi4py or mpiexec is missing."""
    pytest.importorskip("mpi4py")
    bindir = str(Path(sys.executable).parent)
    exe = shutil.which("mpiexec", path=bindir) or shutil.which("mpiexec")
    if exe is None:
        pytest.skip("mpiexec not available")
    return exe
