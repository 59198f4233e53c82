"""Benchmark suite: the hub against the servers its users would pick instead.

Run ``python -m bench --help``. Everything runs on this machine, over loopback, in
bounded loops; every process the suite starts is stopped before it returns.
"""
