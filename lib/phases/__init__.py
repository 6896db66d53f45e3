"""The per-image work of the four phases, free of Prefect.

``context`` holds what a run carries (:class:`RunContext`, :class:`RunConfig`); ``keys``
the content keys results are stored and reused under (per image, and per chunk for the
process task's cache); ``prepare``, ``process``, ``review`` and ``export`` one function per
phase over one image (and the source's listing, the cache's bound); ``workers`` runs a
phase function over many images in the pool of worker processes; ``deliver`` ends a run
(delivery, and the artifacts describing it). The tasks in ``retouch.tasks`` are thin
Prefect wrappers over these functions.
"""
