"""Long-context retrieval and aggregation tasks generated from the project's own texts (``experiment=retrieval``).

* :mod:`~specattn.retrieval.draws`: the seeded generator of a sample, needles that never occur in the haystack;
* :mod:`~specattn.retrieval.tasks`: the tasks (needles, question, gold answer);
* :mod:`~specattn.retrieval.haystack`: haystacks of exactly controlled length with needles at given depths;
* :mod:`~specattn.retrieval.template`: the chat template around a task's text;
* :mod:`~specattn.retrieval.generate`: the grid of samples and the prompt of each;
* :mod:`~specattn.retrieval.scoring`: answer extraction and exact-match scoring;
* :mod:`~specattn.retrieval.report`: summary, heatmaps and tables.
"""
