"""Command-line helpers that are not part of inference: `python -m llava.tools.make_tiny_checkpoint`."""
