"""Thin wrapper (upstream path): see llava.eval.convert_mmvet_for_eval."""
from llava.eval.convert_mmvet_for_eval import main
main()
