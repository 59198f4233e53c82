"""``hub serve --workers N``: N replicas share one port; SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from websockets.asyncio.client import connect

from tests.harness import make_token
from tests.services import missing
from tests.test_compose import load_cluster

cluster = load_cluster()
SOCKETS = 24  # all on one worker by chance: 2 · 2^-24


async def test_workers_share_the_port_and_drain_together() -> None:
    try:
        async with cluster.distributed_env() as env:
            env = {**os.environ, **env, "HUB_DRAIN_SECONDS": "0.5"}
            with tempfile.TemporaryDirectory() as tmp:
                port = cluster.free_port()
                replica = cluster.Replica("pool", port, env, Path(tmp) / "hub.log", args=("--workers", "2"))
                await replica.start()
                try:
                    await replica.wait_ready()
                    replicas = set()
                    sockets = []
                    for i in range(SOCKETS):
                        ws = await connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10)
                        token = make_token(f"w{i}", secret=env["HUB_JWT_SECRET"])
                        await ws.send(json.dumps({"type": "connect", "token": token}))
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        assert frame["type"] == "connected", frame
                        replicas.add(frame["replica"])
                        sockets.append(ws)
                    assert replicas == {"pool-w0", "pool-w1"}, replicas
                    replica.signal(signal.SIGTERM)
                    assert await replica.wait_exit(20) == 0, replica.tail()
                    codes = []
                    for ws in sockets:
                        await ws.wait_closed()
                        assert ws.close_code is not None
                        codes.append(ws.close_code)
                    assert set(codes) == {1012}, codes
                finally:
                    await replica.kill()
    except cluster.ClusterError as exc:
        missing(str(exc))


def test_workers_need_the_distributed_backend() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hub", "serve", "--workers", "2", "--port", str(cluster.free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        check=False,
    )
    assert result.returncode == 2
    assert "distributed backend" in result.stderr
