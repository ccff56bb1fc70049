"""A tiny LLaVA testbed: a synthetic world of coloured shapes (simple and complex regimes)."""


def calibrated_erank_avg(model_path):
    """The --erank-avg for a testbed checkpoint: the mean erank in its erank_calibration.json (written by
    `python -m llava.pruning.calibrate` at the end of scripts/testbed/train.sh). AgilePruner's default (90)
    is LLaVA-1.5-7B's; the testbed's 128-wide features have far lower eranks."""
    import json
    import os

    path = os.path.join(model_path, "erank_calibration.json")
    try:
        with open(path) as f:
            return float(json.load(f)["erank_avg"])
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: no calibrated erank_avg ({e}); run python -m llava.pruning.calibrate") from None
