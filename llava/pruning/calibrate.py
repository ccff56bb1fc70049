"""`python -m llava.pruning.calibrate` is now `python -m llava.tools.calibrate`;
this name keeps working (it imports nothing unless run as a command)."""
if __name__ == "__main__":
    from llava.tools.calibrate import main

    main()
