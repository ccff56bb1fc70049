"""File handling shared by the scorers and converters (pure Python: no torch, no model).

Every reader raises `ScoringInputError` (a ValueError) or FileNotFoundError with a one-line message that
names the file, and the line for JSON-lines files, so a bad input never ends in a bare traceback.
"""
import json
import os
import sys


class ScoringInputError(ValueError):
    """Bad scorer/converter input: the message names the file (and line)."""


def _existing(path, what):
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_jsonl(path, what="JSON-lines file", skip_bad=False):
    """Dicts of a JSON-lines file, in order; blank lines skipped.

    A malformed line raises ScoringInputError naming file and line, unless `skip_bad`, in which case
    the line is skipped and (dicts, [bad line numbers]) is returned instead of the list.
    """
    path = _existing(path, what)
    out, bad = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict):
                    raise ValueError(f"expected a JSON object, got {type(item).__name__}")
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                if skip_bad:
                    bad.append(number)
                    continue
                raise ScoringInputError(f"{path}:{number}: malformed JSON line ({e})") from None
            out.append(item)
    return (out, bad) if skip_bad else out


def read_json(path, what="JSON file"):
    """The parsed content of a JSON file."""
    path = _existing(path, what)
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ScoringInputError(f"{path}: malformed JSON at line {e.lineno} ({e.msg})") from None


def field(item, key, path, line=None):
    """item[key], or a ScoringInputError naming the file (and line) and the missing key."""
    if not isinstance(item, dict) or key not in item:
        where = f"{path}:{line}" if line is not None else str(path)
        raise ScoringInputError(f"{where}: entry has no '{key}' field: {str(item)[:120]}")
    return item[key]


def qid_key(value):
    """A question/image id as a comparable string: 12 and "12" are the same id."""
    return str(value).strip()


def write_json(obj, path, indent=None):
    """Write obj as JSON to path, creating parent folders."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)


def write_score_file(metrics, path):
    """Write a scorer's metrics dict (which holds the headline "score") as indented JSON, if path given."""
    if path:
        write_json(metrics, path, indent=2)


def run_cli(main_fn):
    """Run a CLI body; scorer input errors become a one-line message and exit status 1."""
    try:
        return main_fn()
    except (ScoringInputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)
