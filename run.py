"""specattn entry point: ``python run.py [group=option ...] [key=value ...]`` (Hydra).

Examples: ``python run.py``, ``python run.py model=llama p=0.95``,
``python run.py -m p=0.9,0.95,0.99 method=specattn,dense``. See README.md.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from specattn.runs.app import main
from specattn.runs.preflight import check_command_line
from specattn.runs.validate import register_resolvers

CONF = Path(__file__).resolve().parent / "conf"
register_resolvers()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def run(cfg: DictConfig) -> None:
    main(cfg)


if __name__ == "__main__":
    check_command_line(sys.argv[1:], CONF)  # bad input: one line, exit code 2, before Hydra writes anything
    run()
