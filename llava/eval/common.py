"""What every answer generator shares: arguments, chunking, prompts, batched generation, and an
answer file that is written line by line and resumed after a crash.

Answer files keep upstream's format (`question_id`, `prompt`, `text`, `answer_id`, `model_id`,
`metadata`), with two changes, both in the README's compatibility notes:
- a re-run resumes: ids already in the file are skipped, a torn last line (a crash mid-write) is cut
  off; `--no-resume` starts afresh (upstream always truncates);
- `answer_id` is derived from the model, question and answer (shortuuid of a name) instead of random,
  so an interrupted-then-resumed run writes the same file as an uninterrupted one.
With `--pruning-stats`, `metadata.pruning` holds the image's erank of all and of kept tokens, attention
entropy, kept token count and pruning time (means over the image's views for LLaVA-1.6).
"""
import contextlib
import json
import math
import os
import sys

import numpy as np
import shortuuid
import torch

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.eval.scoring_io import ScoringInputError
from llava.eval.scoring_io import read_json as _read_json
from llava.eval.scoring_io import read_jsonl as _read_jsonl
from llava.mm_utils import get_model_name_from_path, tokenizer_image_token
from llava.pruning import add_pruning_args
from llava.settings import (SettingsError, check_device, check_generation, describe, note_nothing_pruned,
                            resolve_pruning, resolve_template)
from llava.utils import available_cpus, entry_parser


# Bad eval input (question file, image, TSV row): the message names the file and line. The same class
# as the scorers' error, so every eval entry point reports bad input the same way.
EvalInputError = ScoringInputError


# ---- chunking (upstream semantics) -------------------------------------------------------------------
def split_list(lst, n):
    """Split a list into n (roughly) equal-sized consecutive chunks."""
    chunk_size = math.ceil(len(lst) / n)
    return [lst[i:i + chunk_size] for i in range(0, len(lst), chunk_size)]


def get_chunk(lst, n, k):
    """Chunk k of split_list(lst, n); an empty list when lst has fewer than n items' worth of chunks."""
    chunks = split_list(lst, n) if lst else []
    return chunks[k] if k < len(chunks) else []


# ---- reading inputs with errors that name the file and line -----------------------------------------
def read_jsonl(path):
    """Dicts of a JSON-lines question file; a malformed line is an EvalInputError naming file and line, and
    a file without questions is an error too (a run over nothing would end quietly with nothing)."""
    rows = _read_jsonl(path, "Question file")
    if not rows:
        raise EvalInputError(f"{path}: the question file holds no questions")
    return rows


def read_json(path):
    rows = _read_json(path, "Question file")
    if isinstance(rows, list) and not rows:
        raise EvalInputError(f"{path}: the question file holds no questions")
    return rows


def require(item, keys, where):
    """The item's values for `keys`, or an EvalInputError naming `where` and the missing key."""
    missing = [k for k in keys if k not in item]
    if missing:
        raise EvalInputError(f"{where}: missing field(s) {', '.join(map(repr, missing))}")
    return [item[k] for k in keys]


# ---- the answer file ---------------------------------------------------------------------------------
def settings_file(path):
    """Where an answers file's run settings are kept: beside it, `<answers>.run.json`."""
    return os.path.expanduser(path) + ".run.json"


def _has_answers(path):
    return os.path.isfile(path) and os.path.getsize(path) > 0


def _compared(settings):
    """The settings a resume must repeat: all but --pruning-stats (statistics only add answer metadata)."""
    out = dict(settings)
    if isinstance(out.get("pruning"), dict):
        out["pruning"] = {k: v for k, v in out["pruning"].items() if k != "pruning_stats"}
    return out


def check_resume(path, settings, resume=True):
    """Before a run resumes `path`: its answers must have been made with these `settings` (a resume with
    other settings would mix two runs in one file). One error naming each difference; --no-resume starts
    afresh."""
    path = os.path.expanduser(path)
    if not resume or not _has_answers(path):
        return
    try:
        with open(settings_file(path)) as f:
            before = json.load(f)
    except FileNotFoundError:
        raise SettingsError(f"{path} holds answers without a record of the settings they were made with "
                            f"({settings_file(path)}): pass --no-resume to start afresh, or move it") from None
    except ValueError:
        raise SettingsError(f"{settings_file(path)} is not a settings record: pass --no-resume to start afresh, "
                            f"or move it") from None
    before, settings = _compared(before), _compared(settings)
    diffs = []
    for key in sorted(set(before) | set(settings)):
        old, new = before.get(key), settings.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            diffs += [f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                      if old.get(k) != new.get(k)]
        elif old != new:
            diffs.append(f"{key}: {old!r} -> {new!r}")
    if diffs:
        raise SettingsError(f"{path} was made with other settings ({'; '.join(diffs)}): resuming would mix two "
                            f"runs in one file; pass --no-resume to start afresh, or another --answers-file")


class AnswerFile:
    """JSON-lines answers, one flushed line per answer, resumable.

    `key(record)` identifies an answer (question_id; MMBench: question_id and round_id). With resume
    (the default), existing lines are kept and their keys reported by `done`; a last line without its
    newline or not valid JSON (a crash mid-write) is cut off. A malformed line elsewhere is an error:
    that file was not written by us and is not overwritten. `settings` (a dict: the run's model,
    template, pruning and generation settings) are kept in `<answers>.run.json`; resuming a file made
    with other settings is an error (check_resume).
    """

    def __init__(self, path, key=lambda r: r["question_id"], resume=True, settings=None):
        self.path, self.key = os.path.expanduser(path), key
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.done = set()
        if settings is not None:
            check_resume(self.path, settings, resume)
        if resume and os.path.exists(self.path):
            self._load()
        else:
            open(self.path, "w").close()
        if settings is not None:
            with open(settings_file(self.path), "w") as f:
                json.dump(settings, f, indent=1, sort_keys=True)
        self.file = open(self.path, "a", encoding="utf-8")

    def _load(self):
        with open(self.path, "rb") as f:
            data = f.read()
        good, offset = 0, 0
        lines = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            end = offset + len(line) + 1
            last = number == len(lines) or (number == len(lines) - 1 and lines[-1] == b"")
            if line.strip():
                try:
                    record = json.loads(line)
                    if end > len(data):  # no newline after it: torn
                        raise ValueError
                    self.done.add(self.key(record))
                except (ValueError, KeyError, TypeError):
                    if not last:
                        raise EvalInputError(f"{self.path}:{number}: not an answer line; move the file away "
                                             f"or pass --no-resume to overwrite it") from None
                    break
            good = min(end, len(data))
            offset = end
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def write(self, record):
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        self.done.add(self.key(record))

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        if exc_type is KeyboardInterrupt:  # run_main says what was kept
            exc.answers_kept = (len(self.done), self.path)


def answer_record(question_id, prompt, text, model_id, metadata=None, **extra):
    """One answer line in upstream's format, with a deterministic answer_id."""
    name = json.dumps([model_id, question_id, extra.get("round_id"), text], ensure_ascii=False)
    return {"question_id": question_id, "prompt": prompt, "text": text, **extra,
            "answer_id": shortuuid.uuid(name=name), "model_id": model_id, "metadata": metadata or {}}


# ---- arguments and model ------------------------------------------------------------------------------
def eval_parser(module, doc, question_file="tables/question.jsonl", conv_mode="llava_v1", max_new_tokens=1024,
                sampling=True, num_workers=0):
    """The parser of the generator `python -m <module>` (description from its docstring `doc`): upstream's
    model_vqa arguments + --device, --max-new-tokens, --batch-size, --num-workers, --no-resume and the
    pruning flags (the same set in every generator, so scripts can pass one list). num_workers: upstream's
    default, capped at the CPUs this machine has."""
    p = entry_parser(module, doc)
    p.add_argument("--model-path", type=str, default="facebook/opt-350m",
                   help="checkpoint folder, or a hub id already in the Hugging Face cache")
    p.add_argument("--model-base", type=str, default=None, help="the base LLM of a LoRA or projector-only checkpoint")
    p.add_argument("--image-folder", type=str, default="", help="folder the question file's image names are in")
    p.add_argument("--question-file", type=str, default=question_file, help="the questions (JSON lines or JSON)")
    p.add_argument("--answers-file", type=str, default="answer.jsonl",
                   help="where answers go, one JSON line each (resumed if it exists)")
    p.add_argument("--conv-mode", type=str, default=None,
                   help=f"conversation template (default: the one the checkpoint was trained with, else {conv_mode})")
    p.set_defaults(default_conv_mode=conv_mode)
    p.add_argument("--num-chunks", type=int, default=1, help="split the questions into this many chunks (one per GPU)")
    p.add_argument("--chunk-idx", type=int, default=0, help="the chunk this process answers, in [0, --num-chunks)")
    p.add_argument("--temperature", type=float, default=0.2, help="sampling temperature; 0 answers greedily")
    if sampling:
        p.add_argument("--top-p", "--top_p", dest="top_p", type=float, default=None, help="nucleus sampling mass")
        p.add_argument("--num-beams", "--num_beams", dest="num_beams", type=int, default=1, help="beam search width")
    p.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=max_new_tokens,
                   help="longest answer, in tokens")
    p.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda, cpu, mps, ...")
    p.add_argument("--vision-tower", type=str, default=None, help="overrides the config's mm_vision_tower")
    p.add_argument("--batch-size", type=int, default=1,
                   help="prompts per generate call (left-padded; greedy answers equal batch size 1)")
    p.add_argument("--num-workers", type=int, default=min(num_workers, available_cpus()),
                   help="DataLoader worker processes loading images (0: in the main process)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="overwrite the answers file instead of skipping questions already answered")
    add_pruning_args(p)
    return p


def check_chunks(args):
    if getattr(args, "batch_size", 1) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.num_chunks < 1 or not 0 <= args.chunk_idx < args.num_chunks:
        raise ValueError(f"--chunk-idx must be in [0, --num-chunks) with --num-chunks >= 1, "
                         f"got {args.chunk_idx} of {args.num_chunks}")


def run_record(args, conv_mode, pruning):
    """The settings an answer file's answers are made with (kept beside it; a resume must match them)."""
    record = {"model_path": args.model_path, "model_base": args.model_base, "vision_tower": args.vision_tower,
              "conv_mode": conv_mode, "pruning": pruning.to_dict(),
              "temperature": args.temperature, "max_new_tokens": args.max_new_tokens}
    for name in ("top_p", "num_beams"):
        if hasattr(args, name):
            record[name] = getattr(args, name)
    return record


_kept = None  # {(path, base, device, tower): (tokenizer, model, processor)} inside models_kept_loaded()


@contextlib.contextmanager
def models_kept_loaded():
    """Within the block, load_model reads each checkpoint once: a later run of any generator in this process
    reuses its weights and switches the pruning to its own (model.set_pruning). For sweeps of many runs in
    one process (llava.testbed.sweep); everything else about a run (checks, template, answer file) is as
    when it runs alone."""
    global _kept
    outer, _kept = _kept, ({} if _kept is None else _kept)
    try:
        yield
    finally:
        _kept = outer


def load_model(args):
    """(tokenizer, model, image_processor, model_name, pruning config) from the eval arguments.

    Before any weights are read: every setting is checked (llava.settings), the template and the pruning
    in force are resolved (args.conv_mode is set to the template used), an existing answers file is
    checked against this run's settings (AnswerFile), and the run is described in one line on stderr."""
    from llava.model.builder import load_pretrained_model
    from llava.utils import disable_torch_init

    check_chunks(args)
    check_generation(args)
    check_device(args.device)
    model_path = os.path.expanduser(args.model_path)
    model_name = get_model_name_from_path(model_path)
    conv_mode, source = resolve_template(args.conv_mode, model_path, model_name, args.default_conv_mode)
    if source in ("default", "--conv-mode"):
        conv_mode = plain_mmtag(conv_mode, model_name)
    pruning = resolve_pruning(args, model_path)
    args.conv_mode = conv_mode
    args.run_record = run_record(args, conv_mode, pruning.config)
    check_resume(args.answers_file, args.run_record, args.resume)
    print(describe(args.model_path, conv_mode, source, pruning, answers=args.answers_file), file=sys.stderr)
    key = (model_path, args.model_base, args.device, args.vision_tower)
    if _kept is not None and key in _kept:
        tokenizer, model, processor = _kept[key]
        model.set_pruning(pruning.config)
    else:
        disable_torch_init()
        tokenizer, model, processor, _ = load_pretrained_model(
            model_path, args.model_base, model_name, device=args.device, vision_tower=args.vision_tower,
            pruning=pruning.config)
        if _kept is not None:
            _kept[key] = (tokenizer, model, processor)
    note_nothing_pruned(model, pruning.config)
    return tokenizer, model, processor, model_name, pruning.config


def plain_mmtag(conv_mode, model_name):
    """Upstream: a pretrain-only ('plain', not 'finetune') model uses the _mmtag variant of the template
    (where that variant exists)."""
    if "plain" in model_name and "finetune" not in model_name.lower() and "mmtag" not in conv_mode \
            and conv_mode + "_mmtag" in conv_templates:
        return conv_mode + "_mmtag"
    return conv_mode


def image_prompt(text, model_config):
    """The question with the image token in front, as upstream's generators do."""
    if getattr(model_config, "mm_use_im_start_end", False):
        return DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN + "\n" + text
    return DEFAULT_IMAGE_TOKEN + "\n" + text


def full_prompt(question, conv_mode):
    """The conversation prompt with one user turn `question` and an open assistant turn."""
    if conv_mode not in conv_templates:
        raise ValueError(f"Unknown --conv-mode {conv_mode!r}; choose from {', '.join(sorted(conv_templates))}")
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], question)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def prompt_ids(prompt, tokenizer):
    return tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")


def to_model(images, model):
    """Pixels (a tensor or a list of per-image tensors) on the model's device and dtype."""
    param = model.get_input_embeddings().weight
    if images is None:
        return None
    if isinstance(images, list):
        return [img.to(param.device, dtype=param.dtype) for img in images]
    return images.to(param.device, dtype=param.dtype)


@torch.inference_mode()
def generate_answers(model, tokenizer, id_rows, images, image_sizes, args):
    """Answers (stripped strings) for a batch of prompts: id_rows a list of 1-D id tensors (with
    IMAGE_TOKEN_INDEX), images the pixels for them (or None). Several rows are left-padded, and the
    model re-pads its spliced embeddings on the left, so greedy answers equal batch-size-1 answers."""
    device = model.get_input_embeddings().weight.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
    longest = max(r.shape[0] for r in id_rows)
    input_ids = torch.full((len(id_rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(id_rows), longest, dtype=torch.long)
    for i, row in enumerate(id_rows):
        input_ids[i, longest - row.shape[0]:], mask[i, longest - row.shape[0]:] = row, 1
    do_sample = args.temperature > 0
    sampling = {"temperature": args.temperature, "top_p": getattr(args, "top_p", None)} if do_sample \
        else {"temperature": None, "top_p": None}
    side = getattr(model.config, "tokenizer_padding_side", "right")
    model.config.tokenizer_padding_side = "left"
    try:
        out = model.generate(input_ids.to(device), attention_mask=mask.to(device), images=to_model(images, model),
                             image_sizes=image_sizes, do_sample=do_sample, num_beams=getattr(args, "num_beams", 1),
                             max_new_tokens=args.max_new_tokens, use_cache=True, pad_token_id=pad_id, **sampling)
    finally:
        model.config.tokenizer_padding_side = side
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


def take_pruning_stats(model, views_per_image):
    """One answer `metadata` dict per image: {"pruning": the mean of its records' erank_all, erank_kept and
    attention_entropy, the sum of pruning_time_s and of kept tokens}, or {} for every image when the
    records cannot be attributed (nothing recorded, e.g. K >= N). Clears model.pruning_records.
    views_per_image: records expected per image (1, or the number of views with per-view scope)."""
    records = getattr(model, "pruning_records", None) or []
    out, start = [], 0
    if len(records) != sum(views_per_image):  # nothing recorded (K >= N) or not attributable per image
        records.clear()
        return [{} for _ in views_per_image]
    for n in views_per_image:
        group, start = records[start:start + n], start + n
        stats = {}
        for key in ("erank_all", "erank_kept", "attention_entropy"):
            values = [r[key] for r in group if r.get(key) is not None]
            stats[key] = sum(values) / len(values) if values else None
        kept = [len(r["kept_indices"]) for r in group if r.get("kept_indices") is not None]
        stats["kept_tokens"] = sum(kept) if kept else None  # None: merged tokens (visionzip) have no index
        times = [r["pruning_time_s"] for r in group if r.get("pruning_time_s") is not None]
        stats["pruning_time_s"] = sum(times) if times else None  # None: fastv prunes inside the decoder
        out.append({"pruning": stats})
    records.clear()
    return out


def views_per_image(images, pruning):
    """How many pruning records each image produces (see take_pruning_stats)."""
    if images is None:
        return []
    counts = [img.shape[0] if img.ndim == 4 else 1 for img in images] if isinstance(images, list) or images.ndim == 5 \
        else [1] * images.shape[0]
    if pruning.budget_scope == "global" and pruning.is_active:
        return [1] * len(counts)
    return counts


def run_main(main, argv=None, parser=None):
    """Run an entry point; bad input exits with a one-line error (code 2) instead of a traceback."""
    args = parser.parse_args(argv)
    try:
        main(args)
    except (FileNotFoundError, EvalInputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        kept = getattr(e, "answers_kept", None)
        print("\ninterrupted" + (f": {kept[0]} answers kept in {kept[1]}; run the same command again to resume"
                                 if kept else ""), file=sys.stderr)
        return 130
    return 0


# ---- the shared question loop ----------------------------------------------------------------------------
class QuestionDataset(torch.utils.data.Dataset):
    """Items -> (prompt ids, pixels or None, image size or None, item). An item is a dict with
    `question` (the user turn, image token included where there is an image) and either `image_file`
    (a path), `load_image` (a callable returning a PIL image) or neither (text only). Errors are
    returned, not raised, so a DataLoader worker hands the clean message to the main process."""

    def __init__(self, items, tokenizer, image_processor, model_config, conv_mode):
        self.items, self.tokenizer, self.processor = items, tokenizer, image_processor
        self.config, self.conv_mode = model_config, conv_mode

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        from llava.mm_utils import load_image, process_images

        item = self.items[index]
        try:
            image = None
            if item.get("image_file") is not None:
                image = load_image(item["image_file"])
            elif item.get("load_image") is not None:
                image = item["load_image"]()
            pixels = None if image is None else process_images([image], self.processor, self.config)[0]
            ids = prompt_ids(full_prompt(item["question"], self.conv_mode), self.tokenizer)
            return ids, pixels, None if image is None else image.size, item
        except (FileNotFoundError, ValueError, OSError) as e:  # say which question it was
            where = item.get("where") or f"question {item.get('question_id')!r}"
            return type(e)(f"{where}: {e}") if isinstance(e, (FileNotFoundError, ValueError)) else e


def _collate(batch):
    """A batch stays a list. In a DataLoader worker the tensors go back as numpy arrays, pickled through the
    result queue's pipe: torch hands tensors over by file descriptor instead, and a main process interrupted
    (Ctrl-C) during that hand-over left the worker printing a traceback on the user's terminal."""
    if torch.utils.data.get_worker_info() is None:
        return batch
    return [_convert(e, torch.Tensor, torch.Tensor.numpy) for e in batch]


def _convert(entry, kind, to):
    """A dataset entry with each field of type `kind` passed through `to`; an error entry unchanged.
    (_collate sends tensors as numpy arrays; answer_questions turns them back, without a copy.)"""
    return entry if isinstance(entry, Exception) else tuple(to(x) if isinstance(x, kind) else x for x in entry)


def answer_questions(items, args, model, tokenizer, processor, model_name, conv_mode, answers,
                     batch_size=1, num_workers=0, desc="answering"):
    """Answer every item not yet in `answers` (an AnswerFile), writing each line as it comes.

    Each item: key (the AnswerFile key), question_id, prompt (written as "prompt"), question, image
    source (see QuestionDataset), extra (more answer fields, e.g. MMBench's round_id). Items without
    an image are answered one at a time (as upstream's ScienceQA text-only questions)."""
    from tqdm import tqdm

    pruning = model.pruning_config
    todo = [it for it in items if it["key"] not in answers.done]
    if len(todo) < len(items):
        print(f"resuming {answers.path}: {len(items) - len(todo)} of {len(items)} already answered", file=sys.stderr)
    dataset = QuestionDataset(todo, tokenizer, processor, model.config, conv_mode)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=_collate)
    with tqdm(total=len(todo), desc=desc, disable=None) as bar:
        for batch in loader:
            batch = [_convert(e, np.ndarray, torch.from_numpy) for e in batch]
            for entry in batch:
                if isinstance(entry, Exception):
                    raise entry
            with_image = [e for e in batch if e[1] is not None]
            groups = [batch] if len(with_image) in (0, len(batch)) else [[e] for e in batch]
            for group in groups:
                pixels = [e[1] for e in group]
                if pixels[0] is None:
                    images, sizes = None, None
                elif all(isinstance(p, torch.Tensor) and p.shape == pixels[0].shape for p in pixels):
                    images, sizes = torch.stack(pixels), [e[2] for e in group]
                else:
                    images, sizes = pixels, [e[2] for e in group]
                texts = generate_answers(model, tokenizer, [e[0] for e in group], images, sizes, args)
                stats = take_pruning_stats(model, views_per_image(images, pruning)) if images is not None \
                    else [{} for _ in group]
                for (_, _, _, item), text, meta in zip(group, texts, stats):
                    answers.write(answer_record(item["question_id"], item["prompt"], text, model_name, meta,
                                                **item.get("extra", {})))
                bar.update(len(group))
