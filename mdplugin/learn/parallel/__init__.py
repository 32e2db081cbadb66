"""MPI helpers over mpi4py; everything works unchanged without MPI (one rank).

One module per job, all re-exported here (``from mdplugin.learn.parallel import ...``):

* :mod:`.comm` — the communicator (``MPI.COMM_WORLD`` or the one-rank :class:`SerialComm`) and
  waiting for other ranks without spinning;
* :mod:`.collectives` — work shared by *blocks of frames* (the blocks a serial fit uses, so the
  result is the serial one): block lists, gathers, sums, :class:`TreeSum`;
* :mod:`.scheduling` — independent tasks (factorisations, SVDs) spread over the ranks by cost;
* :mod:`.profiling` — peak memory and per-phase CPU/wall times of a fit on each rank.
"""

from .collectives import (
    TreeSum,
    allgather_array,
    allgather_blocks,
    gather_rows,
    local_blocks,
    merge_rank_results,
    rank_offset,
    split_indices,
    sum_over_ranks,
)
from .comm import SerialComm, get_comm, resolve_comm, wait_quietly, wait_sleeping
from .profiling import PhaseTimer, max_rss_mib
from .scheduling import CpuLedger, assign_tasks, share_tasks

__all__ = [
    "SerialComm",
    "get_comm",
    "resolve_comm",
    "wait_quietly",
    "wait_sleeping",
    "split_indices",
    "local_blocks",
    "allgather_blocks",
    "sum_over_ranks",
    "gather_rows",
    "rank_offset",
    "allgather_array",
    "TreeSum",
    "merge_rank_results",
    "assign_tasks",
    "CpuLedger",
    "share_tasks",
    "max_rss_mib",
    "PhaseTimer",
]
