"""Sampling, sequence KL, reward statistics and the alignment-vs-drift evaluation."""
