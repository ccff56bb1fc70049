"""A tiny LLaVA testbed: a synthetic world of coloured shapes (simple and complex regimes)."""
