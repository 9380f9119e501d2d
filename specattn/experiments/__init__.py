"""Experiment runners selected by the Hydra group ``experiment/``.

Each ``conf/experiment/<name>.yaml`` names its runner (``runner: specattn.experiments.<name>.run``);
a runner is ``run(ctx: RunContext) -> ExperimentResult`` (see :mod:`specattn.runs.context`).
"""
