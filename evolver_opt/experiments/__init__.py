"""Runs built on searches: compares of samplers (with their time estimate), static and tuned
baselines, reranking on fresh dev examples, result rows and their cache, the synthetic problems
of the demo, and the choice of a trial to export."""
