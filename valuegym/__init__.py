"""valuegym: multi-agent simulations of value-laden decisions."""

import os

# valuegym parallelises across processes (episodes, Ray workers, joblib jobs); BLAS threads
# inside each process only contend for the same cores, and make small matrix products
# (the co-evolution model's) about 100x slower on a 2-core machine. Users can override.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

__version__ = "0.1.0"
