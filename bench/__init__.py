"""Benchmarks (not tests): retouch against a baseline written like the reference scripts.

Run ``python -m bench`` from the repository root; see bench/README.md.
"""
