"""Convert MMBench answers to the sheet uploaded to the MMBench evaluation server (upstream's CLI).

    python -m llava.eval.convert_mmbench_for_submission --annotation-file mmbench_dev_20230712.tsv \\
        --result-dir answers/SPLIT --upload-dir answers_upload/SPLIT --experiment CKPT

(`python scripts/convert_mmbench_for_submission.py`, upstream's path, runs the same.)

Reads `<result-dir>/<experiment>.jsonl`; takes the TSV's rows without the columns hint, category, source,
image, comment, l2-category; inserts a "prediction" column as the 7th column (the answer whose
`question_id` equals the row's `index`; with --all-rounds answers the last round wins, as upstream).
Writes `<upload-dir>/<experiment>.tsv` always and `<upload-dir>/<experiment>.xlsx` (the file OpenCompass
takes) when openpyxl is installed; without openpyxl it stops with an error saying `pip install openpyxl`
after writing the TSV. Server-scored: no local score.
"""
import csv
import os
import sys

from llava.eval.scoring_io import ScoringInputError, field, qid_key, read_jsonl, run_cli
from llava.utils import entry_parser

DROP = ["hint", "category", "source", "image", "comment", "l2-category"]


def read_tsv(path):
    """(header, rows as lists of str) of a TSV file (fields may be long base64 images)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MMBench annotation file not found: {path}")
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows:
        raise ScoringInputError(f"{path}: empty TSV")
    header, body = rows[0], rows[1:]
    for number, row in enumerate(body, 2):
        if len(row) != len(header):
            raise ScoringInputError(f"{path}:{number}: {len(row)} fields, header has {len(header)}")
    if "index" not in header:
        raise ScoringInputError(f"{path}: no 'index' column")
    return header, body


def build_sheet(annotation_file, result_file):
    """(header, rows) of the upload sheet: kept TSV columns with "prediction" inserted at position 6."""
    header, body = read_tsv(annotation_file)
    keep = [i for i, name in enumerate(header) if name not in DROP]
    predictions = {}
    for line, pred in enumerate(read_jsonl(result_file, "MMBench answers file"), 1):
        predictions[qid_key(field(pred, "question_id", result_file, line))] = field(pred, "text", result_file, line)
    index_col = header.index("index")
    out_header = [header[i] for i in keep]
    out_header.insert(6, "prediction")
    rows = []
    for row in body:
        cells = [row[i] for i in keep]
        cells.insert(6, predictions.get(qid_key(row[index_col]), ""))
        rows.append(cells)
    return out_header, rows


def write_sheet(header, rows, upload_dir, experiment):
    """Write <experiment>.tsv, then <experiment>.xlsx (needs openpyxl); returns the paths written."""
    os.makedirs(upload_dir, exist_ok=True)
    tsv = os.path.join(upload_dir, f"{experiment}.tsv")
    with open(tsv, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    try:
        import openpyxl
    except ImportError:
        raise ScoringInputError(f"wrote {tsv}, but the .xlsx that MMBench's server takes needs openpyxl: "
                                "pip install openpyxl") from None
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header)
    index_col = header.index("index")
    for row in rows:
        row = list(row)
        if row[index_col].lstrip("-").isdigit():
            row[index_col] = int(row[index_col])
        sheet.append(row)
    xlsx = os.path.join(upload_dir, f"{experiment}.xlsx")
    book.save(xlsx)
    return [tsv, xlsx]


def build_parser():
    parser = entry_parser("llava.eval.convert_mmbench_for_submission", __doc__)
    parser.add_argument("--annotation-file", type=str, required=True,
                        help="the MMBench TSV the questions came from (mmbench_dev_20230712.tsv)")
    parser.add_argument("--result-dir", type=str, required=True,
                        help="folder holding the answers JSONL <experiment>.jsonl (from model_vqa_mmbench)")
    parser.add_argument("--upload-dir", type=str, required=True,
                        help="folder for <experiment>.tsv and <experiment>.xlsx (the upload)")
    parser.add_argument("--experiment", type=str, required=True, help="the run's name (checkpoint): the file stem")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    result_file = os.path.join(args.result_dir, f"{args.experiment}.jsonl")
    return run_cli(lambda: write_sheet(*build_sheet(args.annotation_file, result_file), args.upload_dir,
                                       args.experiment))


if __name__ == "__main__":
    main()
