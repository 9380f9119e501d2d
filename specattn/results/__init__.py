"""Collected results of finished runs: one table from many run folders, and its plots
(``python -m specattn.results collect|plots``)."""
