"""Building the trainable policy and the frozen reference from an HF checkpoint."""
