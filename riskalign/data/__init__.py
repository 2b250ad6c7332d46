"""Preference datasets: loading, tokenization, collation and the DataModule."""
