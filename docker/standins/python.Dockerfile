# STAND-IN for python:3.11-slim (the hub image's base), from Debian's python3 (3.11).
# Differences: Python at /usr/bin (official: /usr/local/bin, a newer 3.11.x build); no pip
# outside a venv (the hub's Dockerfile only uses `python -m venv`).
FROM hub-standin/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 \
 && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
