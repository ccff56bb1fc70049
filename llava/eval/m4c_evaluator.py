"""VQA-style answer normalisation and accuracy (the EvalAI / official VQA rules, as upstream's m4c evaluator).

`EvalAIAnswerProcessor()(text)` applies, in order:
1. lower-case; delete "," and "?"; "'s" -> " 's"; strip; newlines/tabs -> spaces;
2. punctuation: each of ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted when it touches a space
   somewhere in the text (or the text has a digit,digit group), else replaced by a space;
   then every "." not followed by a digit is deleted (at most 32 of them, as the official code passes
   re.UNICODE where `count` goes);
3. words: number words none/zero..ten -> digits, articles a/an/the dropped, apostrophe-less contractions
   ("dont", "youre", "hed've") restored from the official table.
Quirks kept on purpose, because the official numbers depend on them: "n/a" -> "n" ("a" is an article),
"somebody'd" -> "somebodyd" (a reversed table entry), capitalised table keys ("Im", "Ive") never match.
"""
import re

_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_NUMBERS["none"] = "0"
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!"]
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # official regex: "(?!<=" is a lookahead, so only "(?!\d)" acts
_DIGIT_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")

# Canonical contractions of the official table; its keys are each form with exactly one apostrophe removed.
_CONTRACTED = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't
must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've
somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd
something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll they're
they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's where've
who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll
y'all'd've you'd you'd've you'll you're you've
""".split()


def _contraction_table():
    table = {}
    for full in _CONTRACTED:
        for i, ch in enumerate(full):
            if ch == "'":
                table[full[:i] + full[i + 1:]] = full
    table["somebody'd"] = "somebodyd"  # reversed entry in the official table
    return table


class EvalAIAnswerProcessor:
    """Callable: raw answer string -> normalised answer string (see the module docstring)."""

    CONTRACTIONS = _contraction_table()
    NUMBER_MAP = _NUMBERS
    ARTICLES = _ARTICLES
    PUNCTUATIONS = _PUNCTUATION

    def word_tokenize(self, word):
        """Lower-case, delete ',' and '?', detach "'s"; stripped."""
        return word.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()

    def process_punctuation(self, text):
        """Delete or space out punctuation (see module docstring), then strip sentence periods."""
        out = text
        digit_comma = _DIGIT_COMMA.search(text) is not None
        for p in self.PUNCTUATIONS:
            touches_space = (p + " ") in text or (" " + p) in text
            out = out.replace(p, "" if (touches_space or digit_comma) else " ")
        return _PERIOD.sub("", out, count=32)

    def process_digit_article(self, text):
        """Number words to digits, drop articles, restore contractions; words re-joined by one space."""
        words = [self.NUMBER_MAP.get(w, w) for w in text.lower().split()]
        words = [w for w in words if w not in self.ARTICLES]
        return " ".join(self.CONTRACTIONS.get(w, w) for w in words)

    def __call__(self, item):
        item = self.word_tokenize(item)
        item = item.replace("\n", " ").replace("\t", " ").strip()
        return self.process_digit_article(self.process_punctuation(item))


def _mean(scores):
    if not scores:
        print("Warning: no predictions to evaluate; accuracy is 0.0")
        return 0.0
    return sum(scores) / len(scores)


class TextVQAAccuracyEvaluator:
    """Soft VQA accuracy: `eval_pred_list([{"pred_answer": str, "gt_answers": [10 str]}]) -> float in [0, 1]`."""

    def __init__(self):
        self.answer_processor = EvalAIAnswerProcessor()

    def _compute_answer_scores(self, raw_answers):
        """{normalised GT answer: its accuracy}: mean over the 10 leave-one-out subsets of min(1, matches/3)."""
        answers = [self.answer_processor(a) for a in raw_answers]
        if len(answers) != 10:
            raise ValueError(f"TextVQA accuracy needs exactly 10 ground-truth answers, got {len(answers)}")
        scores = {}
        for candidate in set(answers):
            count = answers.count(candidate)
            # leaving out one copy of the candidate leaves count-1 matches, leaving out another answer count
            accs = [min(1, float(count - (left_out == candidate)) / 3) for left_out in answers]
            scores[candidate] = sum(accs) / len(accs)
        return scores

    def eval_pred_list(self, pred_list):
        """Mean soft accuracy of the normalised predictions (0 for a prediction no annotator gave)."""
        scores = []
        for entry in pred_list:
            pred = self.answer_processor(entry["pred_answer"])
            scores.append(self._compute_answer_scores(entry["gt_answers"]).get(pred, 0.0))
        return _mean(scores)


class STVQAAccuracyEvaluator:
    """Exact match after normalisation against any GT answer: `eval_pred_list(...) -> float in [0, 1]`."""

    def __init__(self):
        self.answer_processor = EvalAIAnswerProcessor()

    def eval_pred_list(self, pred_list):
        scores = []
        for entry in pred_list:
            pred = self.answer_processor(entry["pred_answer"])
            gts = {self.answer_processor(a) for a in entry["gt_answers"]}
            scores.append(1.0 if pred in gts else 0.0)
        return _mean(scores)
