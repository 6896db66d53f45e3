"""retouch's Prefect flows, and the command line that runs them.

Every process that runs retouch's flows (``retouch``, a served worker, the web front door, a
script calling :func:`retouch.flows.enhance.enhance`) imports this package first, before any
of its threads start: it caps glibc's malloc arenas here, so such a process stays flat batch
after batch (:func:`retouch.lib.perf.limit_malloc_arenas`).
"""

from retouch.lib.perf import limit_malloc_arenas

limit_malloc_arenas()
