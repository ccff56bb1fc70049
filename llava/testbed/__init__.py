"""A tiny LLaVA testbed: a synthetic world of coloured shapes (simple and complex regimes)."""


def calibrated_erank_avg(model_path):
    """The --erank-avg for a testbed checkpoint: the mean erank in its erank_calibration.json (written by
    `python -m llava.tools.calibrate` at the end of scripts/testbed/train.sh). AgilePruner's default (90)
    is LLaVA-1.5-7B's; the testbed's 128-wide features have far lower eranks."""
    from llava.settings import CALIBRATION_FILE, checkpoint_calibration

    value = checkpoint_calibration(model_path)
    if value is None:
        raise ValueError(f"{model_path}/{CALIBRATION_FILE}: no calibrated erank_avg; "
                         f"run python -m llava.tools.calibrate")
    return value
