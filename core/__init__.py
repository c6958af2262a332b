"""Shared by both tasks: images, encoder, vocabulary, prepared layout, feature cache, training loop."""
