"""Bench scripts (``python -m bench.<name>``): speed ratios against a baseline run side by side.

A bench script is an entry point, as ``valuegym run`` is: one BLAS thread per process (set here,
before any script imports numpy) and Mesa's step log quiet.
"""

from valuegym import limit_blas_threads, quiet_library_logs

limit_blas_threads()
quiet_library_logs()
