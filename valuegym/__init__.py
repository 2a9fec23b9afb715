"""valuegym: multi-agent simulations of value-laden decisions.

Layout: every top-level folder ``X`` of the repository installs as ``valuegym.X`` (``envs/`` is
``valuegym.envs``, ``runner/`` is ``valuegym.runner``, ``training/`` is ``valuegym.training``,
likewise ``agents/``, ``scenarios/``, ``conf/``, ``analysis/``, ``app/``; pyproject.toml's
package-dir mapping). This folder is the package root; it holds only glue that belongs to no
other folder: the ``valuegym`` command (``cli.py``), the demo and the records (the writer
``records.py`` and the schema both sides share, ``record_schema.py``).

Importing valuegym changes nothing in the process: entry points (the CLI, the bench scripts,
the test suite) call :func:`limit_blas_threads` and :func:`quiet_library_logs` themselves.
"""

import logging
import os

__version__ = "0.1.0"

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads() -> None:
    """One BLAS thread per process, unless the user set the variables: valuegym parallelises across
    processes (episodes, Ray workers, joblib jobs), where BLAS threads only contend for the same
    cores, and make small matrix products (the co-evolution model's) about 100x slower on a 2-core
    machine. Effective only before numpy is first imported; child processes inherit it. Not for
    ``valuegym train``, whose torch learners take ``torch_threads``."""
    for variable in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")


def quiet_library_logs() -> None:
    """Mesa 3.3 (the co-evolution model) logs every ``Model.step`` at INFO: one step per round
    would flood a Hydra job's log. Called by each job (``valuegym run``, ``valuegym train``)."""
    logging.getLogger("MESA.mesa.model").setLevel(logging.WARNING)
