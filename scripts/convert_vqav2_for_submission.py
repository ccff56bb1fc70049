"""Thin wrapper (upstream path): see llava.eval.convert_vqav2_for_submission."""
from llava.eval.convert_vqav2_for_submission import main
main()
