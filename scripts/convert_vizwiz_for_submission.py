"""Thin wrapper (upstream path): see llava.eval.convert_vizwiz_for_submission."""
from llava.eval.convert_vizwiz_for_submission import main
main()
