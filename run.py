"""specattn entry point: ``python run.py [group=option ...] [key=value ...]`` (Hydra).

Examples: ``python run.py``, ``python run.py model=llama p=0.95``,
``python run.py -m p=0.9,0.95,0.99 method=specattn,dense``. See README.md.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from specattn.app import main
from specattn.config import check_group_choices, register_resolvers
from specattn.errors import SpecAttnError

CONF = Path(__file__).resolve().parent / "conf"
register_resolvers()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def run(cfg: DictConfig) -> None:
    main(cfg)


if __name__ == "__main__":
    try:
        check_group_choices([a for a in sys.argv[1:] if not a.startswith("-")], CONF)
    except SpecAttnError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    run()
