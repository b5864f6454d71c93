"""Imported first in the compute workers' forkserver, before any OpenMP library loads.

libgomp reads its settings once, when it is loaded. Its default lets idle threads spin
for a while after each parallel region: with several worker processes on few cores, one
worker's spinning threads steal the CPU another is computing on (measured here: the
digits benchmark took twice as long right after another computation). Passive waiting
costs nothing when the threads have work. A policy set by the operator is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
