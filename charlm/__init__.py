"""A character-level language model: the lecture's first worked example (Karpathy 2015)."""
