"""Tools around the trainers: results and paper tables, sweeps, synthetic data, ToyWorld, the demo, the dry run.

Imports ``trainers`` first, which hides our dependencies' deprecation notices (e.g. clip's pkg_resources).
"""
import trainers  # noqa: F401
