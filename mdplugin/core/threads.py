"""How many BLAS/OpenMP threads mdplugin's hot paths use.

numpy's BLAS (OpenBLAS), tblite and PySCF (OpenMP) start one thread per core by default. For the
small products of one MD step, one i-PI request or one GFN2-xTB label that is pure loss, and on a
machine whose cores are busy with other processes (a shared node, several MPI ranks per node) it is
ruinous: on the project's busy 2-core machine the same commands ran 5–30× slower with the default
threads than with ``OMP_NUM_THREADS=1`` (the demo 155 s against 28 s; ``mdplugin md`` with ML
energy, dipole and polarizability 39–44 against 243–252 steps/s, with tblite 5–7 against 187–192).

mdplugin therefore limits the thread pools (through ``threadpoolctl``) around its hot paths:

* ``"step"`` work — MD steps (:func:`mdplugin.engines.md.run_md`, the i-PI client, the dynamics of
  ``mdplugin active``), labels (:func:`mdplugin.oracles.label.label_frames`): **1 thread**;
* ``"batch"`` work — fitting a model (:func:`mdplugin.models.training.fit_on_dataset`) and
  predicting many frames: the cores this process may use (its CPU affinity) divided by the MPI
  ranks on its node, and no more than the cores left idle by the rest of the machine (from the
  1-minute load average), at least 1; a batch of fewer than :data:`SMALL_BATCH` structures (the
  first fits of an active-learning run) is step work: its matrices are too small to share.

The user decides instead with the environment variable ``MDPLUGIN_THREADS`` (a number of threads
for every hot path; ``auto`` or unset: the rule above; ``mdplugin --threads N`` sets it for one
command). When ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` or ``MKL_NUM_THREADS`` is set and
``MDPLUGIN_THREADS`` is not, mdplugin leaves the libraries as the user configured them.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Iterator, TypeVar

from .errors import ConfigError

__all__ = ["ENV", "SMALL_BATCH", "WORK", "cpus_available", "limited_threads", "ranks_per_node", "threads_for", "with_threads"]

F = TypeVar("F", bound=Callable[..., Any])

#: the environment variable that overrides the rule (a positive integer, or ``auto``)
ENV = "MDPLUGIN_THREADS"
#: the kinds of work the rule knows
WORK = ("step", "batch")
#: a batch of fewer structures than this runs on one thread, as step work
SMALL_BATCH = 32
#: variables through which the user configures the libraries directly
LIBRARY_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cpus_available() -> int:
    """Cores this process may run on (its CPU affinity: taskset, cgroups, a SLURM allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: variables in which MPI launchers give the number of ranks on this node (MPICH/Hydra, Open MPI,
#: SLURM's srun: "2" or "2(x3)")
LOCAL_RANKS_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_STEP_TASKS_PER_NODE")


def ranks_per_node(comm: Any = None) -> int:
    """MPI ranks sharing this node: from the launcher's variables (no collective call, so any rank
    may ask alone), else the size of ``comm`` (as if all its ranks shared the node), else 1."""
    for name in LOCAL_RANKS_VARIABLES:
        text = os.environ.get(name, "")
        digits = text.split("(")[0].split(",")[0].strip()
        if digits.isdigit() and int(digits) > 0:
            return int(digits)
    return max(1, int(getattr(comm, "size", 1) or 1))


def _user_threads() -> int | None:
    text = os.environ.get(ENV, "").strip().lower()
    if text in ("", "auto"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{ENV}={os.environ[ENV]!r}: give a positive number of threads or 'auto'")
    return value


def threads_for(work: str, comm: Any = None, structures: int | None = None) -> int | None:
    """Threads for ``work`` (``"step"`` or ``"batch"`` of ``structures`` structures; see the module
    docstring), or ``None`` when the user configured the libraries through their own variables."""
    if work not in WORK:
        raise ConfigError(f"unknown kind of work {work!r} (known: {', '.join(WORK)})")
    chosen = _user_threads()
    if chosen is not None:
        return chosen
    if any(os.environ.get(name) for name in LIBRARY_VARIABLES):
        return None
    if work == "step" or (structures is not None and structures < SMALL_BATCH):
        return 1
    cpus = cpus_available()
    share = max(1, cpus // ranks_per_node(comm))
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        load = 0.0
    total = os.cpu_count() or cpus
    # this process itself may be in the load already (it has been running): count one core as ours
    idle = int(total - load + 1.0)
    return max(1, min(share, idle))


@contextlib.contextmanager
def limited_threads(work: str, comm: Any = None, structures: int | None = None) -> Iterator[int | None]:
    """Within the block, the BLAS and OpenMP pools loaded in this process use
    :func:`threads_for(work, comm, structures) <threads_for>` threads (restored afterwards; nested
    blocks work). Yields the number (``None``: left as the user configured them). Entering costs
    about 15 ms: use it around a run, a fit or a batch, not around one MD step."""
    n = threads_for(work, comm, structures)
    if n is None:
        yield None
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n):
        yield n


def with_threads(work: str) -> Callable[[F], F]:
    """Decorator: the function runs inside :func:`limited_threads(work) <limited_threads>`."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with limited_threads(work):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
