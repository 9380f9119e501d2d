"""``run.py``'s checks of a command line before Hydra runs anything: every bad input is one line
(``error: ...``, exit code 2) before any folder is written, any weights load or any job of a grid runs.

For each job (the command itself, or every job of a ``-m`` grid, expanded as Hydra's basic sweeper
does), the config is composed with Hydra's compose API on the same overrides, and:

- group options and keys are known (:func:`specattn.runs.validate.check_group_choices`, :mod:`specattn.runs.config_keys`);
- the composed config passes :func:`specattn.runs.validate.validate`;
- its run folder can be written, holds no other config's or other code's run, its finished results
  (if the run would skip) can be read, and (single runs) it is not in use (:mod:`specattn.runs.run_folder`;
  the run checks again under its lock).

Hydra's own flags (``--help``, ``--cfg``, ``--info``, ...) and a config from another folder
(``--config-path``/``--config-dir``) skip these checks; the run still validates and claims its folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ..core.errors import SpecAttnError, specattn_cause
from .app import INTERRUPTED
from .config_keys import check_keys, parse
from .outputs import SUMMARY, read_results
from .run_folder import check_owner, check_unlocked, check_writable, finished, run_identity
from .validate import check_group_choices, validate


def jobs(overrides: list[str], multirun: bool) -> list[tuple[list[str], str]]:
    """The jobs a command line runs, each with a label: itself, or each job of its ``-m`` grid
    (labelled by its swept values, e.g. ``p=1.5``)."""
    if not multirun:
        return [(overrides, "")]
    parsed = parse(overrides)
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    grid = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    return [(job, " ".join(o for o in job if o.lstrip("+~").split("=", 1)[0] in swept)) for job in grid]


def _one_line(error: Exception) -> SpecAttnError:
    """A Hydra or OmegaConf error (or the SpecAttnError inside one) as a one-line error."""
    cause = specattn_cause(error)
    if cause is not None:
        return cause
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return SpecAttnError(text or type(error).__name__)


def run_dir(cfg: DictConfig, multirun: bool) -> Path | None:
    """The folder Hydra will give the job (None if it cannot be told before Hydra runs)."""
    hydra = HydraConfig.instance()
    previous = hydra.cfg
    hydra.set_config(cfg)  # so ${hydra:...} in the folder's name resolves as it will in the job
    try:
        folder = Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir) if multirun else Path(cfg.hydra.run.dir)
        return folder.absolute()
    except OmegaConfBaseException:
        return None
    finally:
        hydra.cfg = previous


def check_table_method(overrides: list[str], cfg: DictConfig) -> None:
    """A table experiment reads ``experiment.rows``, not the ``method`` group: a ``method`` override
    would be silently ignored, so it is refused."""
    if "rows" not in cfg.experiment:
        return
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key == "method" or key.startswith("method."):
            row = value if key == "method" else "<name>"
            raise SpecAttnError(
                f"experiment={cfg.experiment.name} takes its methods from experiment.rows; {override} would be "
                f"ignored: add a row instead, e.g. experiment.extra_rows=[{row}] (a dict row sets fields: "
                f"'experiment.extra_rows=[{{method:{row},<field>:<value>}}]')")


def check_job(overrides: list[str], conf_dir: Path, config_name: str, multirun: bool) -> None:
    """Compose one job and refuse it if anything about it is wrong (one :class:`SpecAttnError`)."""
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            check_keys(overrides, conf_dir, lambda groups: compose(config_name, overrides=groups,
                                                                   return_hydra_config=True))
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
        check_table_method(overrides, cfg)
        validate(cfg)
        folder = run_dir(cfg, multirun)
    except (HydraException, OmegaConfBaseException) as error:
        raise _one_line(error) from None
    if folder is not None:
        check_writable(folder)
        identity = run_identity(cfg)
        check_owner(folder, identity, bool(cfg.rerun))
        if not cfg.rerun and finished(folder, identity):  # to be skipped: its tables must read
            read_results(folder)
            read_results(folder, SUMMARY)
        if not multirun:
            check_unlocked(folder)


def check_jobs(overrides: list[str], conf_dir: Path, multirun: bool = False) -> list[tuple[list[str], SpecAttnError | None]]:
    """Every job of a command line (the default config) checked by :func:`check_job`, each with its error or None
    (``scripts/gpu/precheck.py`` prints them; ``tests/test_gpu_scripts.py`` asserts them)."""
    out = []
    for job, _ in jobs(overrides, multirun):
        try:
            check_job(job, conf_dir, "config", multirun)
            out.append((job, None))
        except SpecAttnError as error:
            out.append((job, error))
    return out


def check_command_line(argv: list[str], conf_dir: Path) -> None:
    """Exit with one line (code 2) if the command line asks for anything wrong; return otherwise."""
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.cfg or args.shell_completion or args.config_path \
            or args.config_dir or args.experimental_rerun:
        return
    try:
        check_group_choices(args.overrides, conf_dir)
        grid = jobs(args.overrides, args.multirun)
        for index, (job, label) in enumerate(grid):
            try:
                check_job(job, conf_dir, args.config_name or "config", args.multirun)
            except SpecAttnError as error:
                if len(grid) > 1:
                    raise SpecAttnError(f"job #{index} ({label}) of the sweep: {error}") from None
                raise
    except (SpecAttnError, HydraException, OmegaConfBaseException) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted before the run started: nothing was written", file=sys.stderr)
        sys.exit(INTERRUPTED)
