"""Linear probes on cached features (the paper's "Linear probing" protocol).

:mod:`medprobe.probe.logistic` holds :class:`LogisticProbe` (one C-selection loop) and the
registry builder :func:`from_config`; :mod:`medprobe.probe.solver` the backend interface;
:mod:`medprobe.probe.sklearn_solver` and :mod:`medprobe.probe.torch_solver` the two backends;
:mod:`medprobe.probe.torch_lbfgs` the torch L-BFGS solver of scikit-learn's objective.
"""

from medprobe.errors import ProbeError
from medprobe.probe.logistic import (
    BACKENDS,
    SELECTION_METRICS,
    SOLVERS,
    TIE_TOLERANCE,
    LogisticProbe,
    from_config,
)
from medprobe.probe.sklearn_solver import SklearnFit, SklearnSolver
from medprobe.probe.solver import (
    Fitted,
    Solver,
    SolverFactory,
    SolverSettings,
    Step,
    blas_threads,
    rows_per_chunk,
)
from medprobe.probe.torch_lbfgs import (
    DEVICE_PATTERN,
    TORCH_DTYPES,
    LBFGSResult,
    device_logits,
    fit_logistic_lbfgs,
    logistic_objective,
    resolve_device,
    resolve_dtype,
    standardise_to_device,
    torch_cpu_threads,
)
from medprobe.probe.torch_solver import Layout, TorchFit, TorchLBFGSSolver, torch_targets

__all__ = [
    "BACKENDS",
    "DEVICE_PATTERN",
    "SELECTION_METRICS",
    "SOLVERS",
    "TIE_TOLERANCE",
    "TORCH_DTYPES",
    "Fitted",
    "LBFGSResult",
    "Layout",
    "LogisticProbe",
    "ProbeError",
    "SklearnFit",
    "SklearnSolver",
    "Solver",
    "SolverFactory",
    "SolverSettings",
    "Step",
    "TorchFit",
    "TorchLBFGSSolver",
    "blas_threads",
    "device_logits",
    "fit_logistic_lbfgs",
    "from_config",
    "logistic_objective",
    "resolve_device",
    "resolve_dtype",
    "rows_per_chunk",
    "standardise_to_device",
    "torch_cpu_threads",
    "torch_targets",
]
