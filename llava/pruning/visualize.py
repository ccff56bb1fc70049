"""`python -m llava.pruning.visualize` is now `python -m llava.tools.visualize`;
this name keeps working (it imports nothing unless run as a command)."""
if __name__ == "__main__":
    from llava.tools.visualize import main

    main()
