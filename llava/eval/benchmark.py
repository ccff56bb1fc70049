"""`python -m llava.eval.benchmark` is now `python -m llava.tools.benchmark`;
this name keeps working (it imports nothing unless run as a command)."""
if __name__ == "__main__":
    from llava.tools.benchmark import main

    main()
