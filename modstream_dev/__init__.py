"""Development tooling shared by the integration tests and the benchmarks: nothing here
serves, so the image does not ship it (it is outside the installed packages). Import it
from the repository root (pytest does; benchmarks/throughput.py puts the root on the path).
"""
