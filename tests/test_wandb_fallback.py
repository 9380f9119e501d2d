"""``logger.mode=online`` without a reachable W&B: the run starts within ``logger.init_timeout``, logs
offline, says in one line how to upload later, and leaves one offline run for ``wandb sync``.
"No network" is real: W&B is pointed at a local port nothing listens on."""

import socket
import time

import pandas as pd

from .conftest import run_cli
from .conftest import tiny_sweep_args as tiny


def closed_port() -> int:
    """A local TCP port with nothing listening (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_online_without_network_falls_back_to_offline(tiny_model_dir, tmp_path):
    env = {"SPECATTN_OUTPUTS": str(tmp_path), "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}",
           "WANDB_API_KEY": "0" * 40}
    args = tiny(tiny_model_dir, "logger=wandb", "logger.mode=online", "logger.init_timeout=3")
    start = time.perf_counter()
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - start < 60  # W&B's own default waits 90 s and then fails the run
    folder = next(tmp_path.glob("ppl/*"))
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: W&B could not start online (logger.init_timeout=3s: "), \
        result.stderr
    assert lines[0].endswith(f"logging offline instead: upload later with `wandb sync {folder}/wandb/offline-run-*`")
    assert len(pd.read_parquet(folder / "results.parquet")) == 2
    runs = sorted(path.name for path in (folder / "wandb").iterdir() if path.is_dir() and not path.is_symlink())
    assert runs == [runs[0]] and runs[0].startswith("offline-run-")  # not the failed online attempt's folder
    assert runs[0].rsplit("-", 2)[1] == folder.name.rsplit("-", 1)[1]  # the run id: <signature>-<data and code hash>
