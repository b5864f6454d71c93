"""``python -m bench`` (``make bench``): see bench/runner.py."""

import os
import sys

# The same OpenMP settings as the service's workers (service/workerenv.py), set before
# scikit-learn loads libgomp: the in-process side must not be slowed, or sped up, by a
# setting the service side does not share.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.runner import main

sys.exit(main())
