"""`python -m llava.pruning.bench` is now `python -m llava.tools.bench`;
this name keeps working (it imports nothing unless run as a command)."""
if __name__ == "__main__":
    from llava.tools.bench import main

    main()
