"""Speed and peak memory of the real LitModules, built from an experiment's config (experiments/benchmark.py).

runs.py builds a case's module and batches as train.py does (synthetic.py stands in for absent data); measure.py
times its training step and its sampling network step; peers.py swaps in diffusers / transformers networks;
report.py writes the tables, the record and the plot.
"""
