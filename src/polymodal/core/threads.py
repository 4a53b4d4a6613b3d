"""How many intra-op threads each thread of a process may use, where several threads run torch.

torch and faiss parallelise inside an operation with OpenMP, and OpenMP keeps one team of helper threads
for every thread that ever ran a parallel region. Two such teams on two cores cost far more than either
saves: GNU OpenMP sees more busy threads than cores, stops spinning between regions and puts its helpers
to sleep, so each of the ~100 small regions of a MiniLM pass pays a futex wake-up. Measured on the
2-core development machine: one text-tower pass takes 3.3 ms with one team, 9 ms once a second thread has
run a parallel region (in any thread, for as long as the process lives), and 5.3 ms with one thread.

So a server gives one thread (the text lane) every core and every other thread one intra-op thread
(:func:`use_threads`), and a library caller who never starts a second thread keeps torch's default.
"""

from __future__ import annotations

import sys
import threading

import torch

_local = threading.local()


def use_threads(n: int) -> None:
    """Let the calling thread use ``n`` intra-op threads in torch and in faiss (if loaded).

    OpenMP keeps the count per thread, so this does not change threads that have already run torch;
    threads that start later and set nothing inherit torch's most recent count.
    """
    # torch sets a thread's count once, lazily, from its latest process-wide count, on the first operation
    # that asks for it; trigger that first, or it would later undo this.
    torch.get_num_threads()
    torch.set_num_threads(n)
    faiss = sys.modules.get("faiss")  # its own OpenMP runtime where it is not torch's; unloaded: nothing to set
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    _local.threads = n


def single_threaded() -> None:
    """:func:`use_threads` (1), once per thread (a worker thread calls this before each task)."""
    if getattr(_local, "threads", None) != 1:
        use_threads(1)
