"""Run plumbing: config checks before anything loads, run signatures and data fingerprints, run folders
(atomic tables, resumable parts, locks), experiment tracking, and what run.py does with a config."""
