"""The vCenter simulator for benchmarks. Its helper is test support (tests/vcsim.py), not part of the vtax package,
so a benchmark run as a script finds it through the repository root."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.vcsim import VcSim

__all__ = ["VcSim"]
