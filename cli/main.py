"""Entry point of the ``retouch`` command."""

from retouch.flows.cli import _exit_now, app, approval_lines, main, reflow_help

__all__ = ["_exit_now", "app", "approval_lines", "main", "reflow_help"]
