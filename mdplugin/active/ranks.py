"""Several MPI ranks in one active-learning run: the collective steps of :mod:`mdplugin.active.loop`.

Every function takes the communicator (``comm.size == 1``: one process, no MPI call) and is
collective: every rank calls it, in the same order. What happens on P ranks:

* walkers: every rank runs its own walker (:func:`walker_seed`); the checkpoint holds them all
  (:func:`gather_walkers`, :func:`rank_walker`);
* candidates of a segment are gathered on every rank (:func:`gather_candidates`), which all run
  the same selection;
* the picked structures are labelled in parallel, rank r taking the ones ``r, r + P, …`` of the
  batch (:func:`label_shares`);
* each target is fitted on one rank and the fitted models rebuilt on every rank
  (:func:`fit_shared`), so the models stay identical;
* only rank 0 reads and writes the run folder (:func:`on_root`: the others get the result by
  broadcast);
* an error on one rank is raised on every rank (:class:`AllRanks`), or, where the others could
  wait forever, ends the job with ``Abort`` (:func:`abort_on_failure`).
"""

from __future__ import annotations

import pickle
import sys
import time
from typing import Any, Callable

import numpy as np

from ..structures.data import Dataset
from ..core.errors import DataError
from ..models.base import get_model_class
from ..models.training import fit_on_dataset

__all__ = ["AllRanks", "abort_on_failure", "each", "fit_shared", "gather_candidates", "gather_walkers",
           "label_shares", "model_from_state", "model_state", "on_root", "portable", "rank_walker",
           "walker_seed"]


class AllRanks(Exception):
    """An error raised on every rank at once (no rank is left waiting): :func:`abort_on_failure`
    re-raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it can be sent to other ranks (pickled), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an exception class that does not pickle
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def each(comm: Any, fn: Callable[[], Any]) -> tuple[list, BaseException | None]:
    """Run ``fn`` on every rank; everyone's results (rank order) and the first error, on every rank."""
    try:
        value, error = fn(), None
    except Exception as exc:  # noqa: BLE001 - shared with the other ranks
        value, error = None, portable(exc)
    if comm.size == 1:
        if error is not None:
            raise error
        return [value], None
    got = comm.allgather((value, error))
    errors = [e for _, e in got if e is not None]
    return [v for v, _ in got], (errors[0] if errors else None)


def on_root(comm: Any, fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0, its result broadcast to every rank (its error raised on every rank)."""
    if comm.size == 1:
        return fn()
    value, error = None, None
    if comm.rank == 0:
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - shared with the other ranks
            error = portable(exc)
    value, error = comm.bcast((value, error), root=0)
    if error is not None:
        raise AllRanks(error)
    return value


def abort_on_failure(comm: Any, fn: Callable[[], Any]) -> Any:
    """``fn()`` on every rank. An :class:`AllRanks` error is re-raised as the error it carries
    (every rank raises it together); any other error is on this rank only, where the others may
    be waiting in a collective: a message on stderr, then ``comm.Abort(1)``."""
    if comm.size == 1:
        return fn()
    try:
        return fn()
    except AllRanks as exc:  # raised on every rank together: a normal error
        raise exc.error from None
    except BaseException as exc:  # one rank only: the others may be waiting in a collective
        sys.stderr.write(f"mdplugin active: rank {comm.rank} of {comm.size} failed "
                         f"({type(exc).__name__}: {exc}); aborting every rank\n")
        sys.stderr.flush()
        # mpiexec forwards a rank's stderr through its proxy, which Abort kills: give it a moment
        # to pass the message on (on a loaded machine it was lost without this pause)
        time.sleep(0.5)
        comm.Abort(1)
        raise


# --- walkers --------------------------------------------------------------------------------
def walker_seed(seed: int, rank: int) -> int:
    """Seed of the random numbers (velocities, thermostat, walker starts) of ``rank``'s walker."""
    return seed + 1000 * rank


def gather_walkers(comm: Any, positions: np.ndarray, momenta: np.ndarray, rng_state: dict,
                   retries: int) -> tuple[dict, dict]:
    """The walkers of ranks > 0 for rank 0's checkpoint: (metadata, arrays) to add to state.npz
    (``ranks``, ``rank_rng``, ``rank_retries``; ``positions_rank{r}``, ``momenta_rank{r}``,
    (n_atoms, 3), in ASE units). Empty on ranks > 0 and on one rank."""
    if comm.size == 1:
        return {}, {}
    walkers = comm.gather((positions, momenta, rng_state, retries), root=0)
    if comm.rank != 0:
        return {}, {}
    meta = {"ranks": comm.size, "rank_rng": [w[2] for w in walkers[1:]], "rank_retries": [w[3] for w in walkers[1:]]}
    arrays = {}
    for r, w in enumerate(walkers[1:], 1):
        arrays[f"positions_rank{r}"], arrays[f"momenta_rank{r}"] = w[0], w[1]
    return meta, arrays


def rank_walker(meta: dict, arrays: dict, rank: int) -> tuple[np.ndarray, np.ndarray, dict, int] | None:
    """``rank``'s checkpointed walker: (positions, momenta, random-generator state, retries), or
    ``None`` when the checkpoint does not know that rank (the run had fewer ranks)."""
    if rank == 0:
        return arrays["positions"], arrays["momenta"], meta["rng"], int(meta.get("retries", 0))
    if rank < int(meta.get("ranks", 1)):
        return (arrays[f"positions_rank{rank}"], arrays[f"momenta_rank{rank}"], meta["rank_rng"][rank - 1],
                int(meta["rank_retries"][rank - 1]))
    return None


# --- candidates and labels ------------------------------------------------------------------
def gather_candidates(comm: Any, candidates: list[dict], step: int) -> tuple[list[dict], int]:
    """Every rank's candidates of a segment, in rank order, each with its ``rank``, and the step
    counter: the largest over the ranks (a segment may stop early on some)."""
    mine = [dict(c, rank=comm.rank) for c in candidates]
    got = comm.allgather((mine, step))
    return [c for part, _ in got for c in part], max(s for _, s in got)


def label_shares(comm: Any, n: int, predict: Callable[[int], Any],
                 label: Callable[[int], Any]) -> tuple[dict[int, tuple], BaseException | None]:
    """Label the items ``i`` of a batch of ``n``, rank r taking ``r, r + P, …``: ``(label(i),
    predict(i))`` by item, every rank's, on every rank, and the first error. ``predict(i)`` (the
    models' predictions) runs first; an error in ``label(i)`` (the oracle) ends that rank's share
    and keeps its earlier labels, an error in ``predict(i)`` loses that rank's share."""

    def share() -> dict:
        out = {}
        for i in range(comm.rank, n, comm.size):
            predicted = predict(i)
            try:
                out[i] = (label(i), predicted)
            except Exception as exc:  # noqa: BLE001 - keep this rank's earlier labels
                out["error"] = portable(exc)
                break
        return out

    parts, error = each(comm, share)
    done: dict = {}
    for part in parts:  # None: that rank failed outside the oracle (error already set)
        error = error or (part or {}).pop("error", None)
        done.update(part or {})
    return done, error


# --- models ---------------------------------------------------------------------------------
def model_state(model) -> dict:
    """What rebuilds a fitted model on another rank: :meth:`~mdplugin.models.base.Model.export_state`
    (the contents of its model file)."""
    return model.export_state()


def model_from_state(state: dict):
    """The model of :func:`model_state`, rebuilt as :func:`mdplugin.models.load_model` does."""
    return get_model_class(state["kind"]).from_state(state)


def fit_shared(comm: Any, targets: tuple[str, ...], data: Dataset, new_model: Callable[[str], Any],
               seconds: dict[str, float]) -> tuple[dict, dict[str, float]]:
    """Fit one model per target on ``data``, the targets shared among the ranks: each fitted on
    one rank, the longest first on the least loaded rank (by ``seconds``, the fit times of the
    previous training; 1 s when unknown). The fitted models are sent to every rank, which all
    rebuild them from the same arrays, so the models are identical on every rank.

    Returns (models by target, fit wall time by target in s), on every rank.
    """
    if len(data) == 0:
        raise AllRanks(DataError("active: no labelled frames to train on (give initial data or n_initial > 0)"))
    load = [0.0] * comm.size
    owner = {}
    for t in sorted(targets, key=lambda t: -seconds.get(t, 1.0)):  # stable: config order on ties
        r = int(np.argmin(load))
        owner[t] = r
        load[r] += seconds.get(t, 1.0)

    def mine() -> dict:
        out = {}
        for t in targets:
            if owner[t] == comm.rank:
                t1 = time.perf_counter()
                model = fit_on_dataset(new_model(t), data)
                out[t] = (model_state(model), time.perf_counter() - t1)
        return out

    parts, error = each(comm, mine)
    if error is not None:
        raise AllRanks(error)
    states = {t: v for part in parts for t, v in part.items()}
    return {t: model_from_state(states[t][0]) for t in targets}, {t: states[t][1] for t in targets}
