"""The ``retouch`` command: one module per command group, one error handler for them all."""
