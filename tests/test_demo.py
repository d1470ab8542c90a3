"""`xds-ingress demo` (what `make run` runs), driven as a newcomer would."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import sys
from pathlib import Path

import pytest
from peers import REPO, free_port, run_grpcurl

pytestmark = pytest.mark.timeout(90)


async def test_demo_serves_the_printed_grpcurl_commands_and_stops_cleanly() -> None:
    http_port, xds_port, admin_port = free_port(), free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "xds-ingress"),
        "demo",
        "--examples",
        str(REPO / "examples"),
        "--http-port",
        str(http_port),
        "--xds-port",
        str(xds_port),
        "--admin-port",
        str(admin_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    printed: list[str] = []
    try:
        async with asyncio.timeout(45):
            while not any("Press Ctrl-C" in line for line in printed):
                line = await process.stdout.readline()
                assert line, "the demo exited before it was ready:\n" + "".join(printed)
                printed.append(line.decode())
        text = "".join(printed).replace("\\\n", " ")
        commands = [
            shlex.split(line.strip())
            for line in text.splitlines()
            if "grpcurl" in line and "SayHello" in line
        ]
        assert len(commands) == 2, text
        for command, backend in zip(commands, ("a", "b"), strict=True):
            # Run exactly what was printed, with our grpcurl binary.
            rc, out, err = await run_grpcurl(command[1:], timeout=10)
            assert rc == 0, err
            assert json.loads(out)["backend"] == backend
        envoy_log = re.search(r"Envoy log\s+(\S+)", text)
        assert envoy_log is not None
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(process.stdout.read(), 20)
        await asyncio.wait_for(process.wait(), 20)
    assert process.returncode == 0
    assert "stopping Envoy" in rest.decode()
    # What it started is gone: the control plane and Envoy no longer answer.
    for port in (xds_port, http_port):
        rc, _, _ = await run_grpcurl(
            ["-plaintext", "-connect-timeout", "1", f"127.0.0.1:{port}", "list"], timeout=10
        )
        assert rc != 0
