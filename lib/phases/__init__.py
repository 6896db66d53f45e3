"""The per-image work of the four phases, free of Prefect.

``context`` holds what a run carries (:class:`RunContext`, :class:`RunConfig`); ``keys``
the content keys results are stored and reused under; ``prepare``, ``process``, ``review``
and ``export`` one function per phase over one image; ``workers`` runs a phase function
over many images in the pool of worker processes. The tasks in ``retouch.tasks`` are thin
Prefect wrappers over ``workers``.
"""
