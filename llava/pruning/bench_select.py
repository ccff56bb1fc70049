"""`python -m llava.pruning.bench_select` is now `python -m llava.tools.bench_select`;
this name keeps working (it imports nothing unless run as a command)."""
if __name__ == "__main__":
    from llava.tools.bench_select import main

    main()
