"""Thin wrapper (upstream path): see llava.eval.convert_gqa_for_eval."""
from llava.eval.convert_gqa_for_eval import main
main()
