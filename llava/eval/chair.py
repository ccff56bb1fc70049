"""Compute the CHAIR object-hallucination metrics of image captions (Rohrbach et al. 2018), offline.

    python -m llava.eval.chair --cap-file captions.jsonl --annotation-file instances_val2014.json \\
        [--object-lists objects.json] [--coco-captions-file captions_val2014.json] [--out details.json] \\
        [--score-file scores.json]

Captions: JSON lines {"image_id" (or "question_id", or "image"), "text"}. Ground-truth objects per image:
the COCO categories of its instance annotations (`instances_val2014.json`; images without annotations
have none), and/or a JSON {image_id: [object names]} (names are COCO categories or any synonym below);
optionally, as the standard CHAIR does, the objects named in the image's reference captions
(`captions_val2014.json`). Ids match across files as strings, with COCO file names and zero-padded
numbers reduced to the number ("COCO_val2014_000000000042.jpg" = "000042" = 42).

Object mentions: the caption is lower-cased and split into words at anything that is not a letter
(so "hot-dog" = "hot dog"), each word singularised (rule-based, plus irregulars such as people ->
person), two-word phrases joined first ("teddy bear", "traffic light", "motor bike"; "baby bird" ->
bird, "passenger train" -> train, "toilet seat" -> toilet), "seat" ignored when "toilet" is mentioned,
and each word looked up in a synonym table over the 80 COCO categories (in the spirit of the standard
CHAIR list; e.g. man/woman/child -> person, puppy -> dog, table/desk -> dining table, sofa -> couch).

Metrics (all in %, except len):
- chair_s: captions with at least one hallucinated object / captions;
- chair_i: hallucinated mentions / all object mentions (repeated mentions count, as the standard);
- recall: distinct ground-truth objects mentioned / distinct ground-truth objects, pooled over images;
- len: mean caption length in words (whitespace split).
Headline "score": chair_s (the first CHAIR column of the AgilePruner table; lower is better).
"""
import re
from collections import OrderedDict

from llava.eval.scoring_io import ScoringInputError, field, read_json, read_jsonl, run_cli, write_json, \
    write_score_file
from llava.utils import entry_parser

# canonical COCO category: synonyms (the canonical name counts as its own synonym)
_SYNONYMS = """
person: people, girl, boy, man, woman, kid, child, chef, baker, adult, rider, baby, worker, passenger,
  sister, brother, biker, policeman, cop, officer, lady, cowboy, bride, groom, male, female, guy, traveler,
  mother, father, gentleman, pitcher, player, skier, snowboarder, skater, skateboarder, surfer,
  catcher, umpire, tourist, pedestrian, soldier, doctor, student, teenager, driver, hunter, shopper,
  cyclist, bicyclist, spectator, toddler, infant, human
bicycle: bike, unicycle, minibike, trike
car: automobile, van, minivan, sedan, suv, hatchback, cab, jeep, coupe, taxicab, limo, limousine, taxi
motorcycle: motorbike, motor bike, motor cycle, scooter, moped
airplane: aeroplane, plane, air plane, airliner, jetliner, aircraft, jet, airbus, biplane, seaplane
bus: minibus, trolley
train: locomotive, tram, tramway, caboose
truck: pickup, lorry, hauler, firetruck
boat: ship, sailboat, motorboat, dinghy, powerboat, speedboat, canoe, skiff, yacht, kayak, catamaran,
  houseboat, vessel, rowboat, trawler, ferryboat, tugboat, barge, ferry, lifeboat, freighter, steamboat
traffic light: traffic signal, street light, stop light, streetlight, stoplight
fire hydrant: hydrant
stop sign
parking meter: meter
bench: pew
bird: ostrich, owl, seagull, goose, duck, parakeet, falcon, robin, pelican, heron, hummingbird, pigeon,
  sparrow, seabird, blackbird, gull, swan, flamingo, parrot, crow, raven, pheasant, rooster, peacock,
  vulture, eagle, hawk, hen, finch, woodpecker
cat: kitten, kitty, feline, tabby
dog: puppy, pup, beagle, chihuahua, dachshund, rottweiler, canine, pitbull, collie, pug, terrier, poodle,
  labrador, doggie, doggy, mutt, spaniel, bulldog, sheepdog, corgi, greyhound, retriever, hound, husky
horse: colt, pony, racehorse, stallion, equine, mare, foal, mustang, bronco
sheep: lamb, ram, ewe, goat
cow: cattle, ox, calf, bull, heifer, buffalo, bison
elephant
bear: grizzly
zebra
giraffe
backpack: knapsack, rucksack
umbrella: parasol
handbag: purse, wallet, briefcase
tie: necktie, bow tie, bow
suitcase: suit case, luggage
frisbee
skis: ski
snowboard
sports ball: ball, soccer ball, tennis ball
kite
baseball bat
baseball glove: mitt
skateboard
surfboard: longboard, skimboard, shortboard, wakeboard
tennis racket: racket, racquet
bottle
wine glass
cup: mug
fork
knife
spoon
bowl: container
banana
apple
sandwich: burger, sub, cheeseburger, hamburger
orange
broccoli
carrot
hot dog
pizza
donut: doughnut, bagel
cake: cheesecake, cupcake, shortcake, coffeecake, pancake
chair: seat, stool
couch: sofa, recliner, futon, loveseat, settee
potted plant: houseplant, pot plant, flowerpot
bed
dining table: table, desk
toilet: urinal, commode, lavatory, potty
tv: television, monitor, tv screen
laptop: computer, notebook, netbook, macbook, laptop computer
mouse
remote: remote control
keyboard
cell phone: mobile phone, phone, cellphone, telephone, smartphone, iphone
microwave
oven: stovetop, stove, stove top oven
toaster
sink
refrigerator: fridge, freezer
book: novel
clock
vase
scissors
teddy bear: teddybear
hair drier: hair dryer, hairdryer, blow dryer, blowdryer
toothbrush
"""


def _parse_synonyms(text):
    table = OrderedDict()
    for entry in re.sub(r"\n\s+", " ", text.strip()).split("\n"):
        canonical, _, rest = entry.partition(":")
        canonical = canonical.strip()
        table[canonical] = canonical
        for syn in rest.split(","):
            if syn.strip():
                table[syn.strip()] = canonical
    return table


SYNONYMS = _parse_synonyms(_SYNONYMS)           # word or phrase -> COCO category
COCO_CATEGORIES = sorted(set(SYNONYMS.values()))  # the 80 categories

# two-word phrases read as one word: every multi-word synonym, plus the standard's special cases
_ANIMALS = ["bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub"]
DOUBLE_WORDS = {p: p for p in SYNONYMS if " " in p}
DOUBLE_WORDS.update({f"{age} {a}": a for a in _ANIMALS for age in ("baby", "adult")})
DOUBLE_WORDS.update({"passenger train": "train", "passenger jet": "jet", "toilet seat": "toilet",
                     "home plate": "home plate", "train track": "train track", "teddy bear": "teddy bear"})
_THREE_WORDS = {p for p in SYNONYMS if p.count(" ") == 2}  # "stove top oven"

_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
              "geese": "goose", "knives": "knife", "oxen": "ox", "calves": "calf", "feet": "foot",
              "teeth": "tooth", "leaves": "leaf", "wolves": "wolf", "shelves": "shelf", "buses": "bus",
              "scissors": "scissors", "skis": "skis", "sheep": "sheep", "cattle": "cattle", "dice": "die",
              "glasses": "glass", "cacti": "cactus", "series": "series", "species": "species",
              "policemen": "policeman", "gentlemen": "gentleman", "firemen": "fireman", "mitts": "mitt",
              "ponies": "pony", "tvs": "tv", "skies": "sky", "couches": "couch", "benches": "bench"}


def singularize(word):
    """Singular of an English noun by suffix rules plus irregulars; words it does not know pass unchanged."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is", "ous")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y" if len(word) > 4 else word[:-1]       # puppies -> puppy, ties -> tie
    if word.endswith(("sses", "xes", "zes", "ches", "shes")):
        return word[:-2]                                               # glasses, boxes, sandwiches
    return word[:-1]


def caption_to_objects(caption):
    """(mentioned words/phrases, their COCO categories), in caption order, repeats kept."""
    words = [singularize(w) for w in re.findall(r"[a-z]+", caption.lower())]
    merged, i = [], 0
    while i < len(words):
        three, two = " ".join(words[i:i + 3]), " ".join(words[i:i + 2])
        if three in _THREE_WORDS:
            merged.append(three)
            i += 3
        elif two in DOUBLE_WORDS:
            merged.append(DOUBLE_WORDS[two])
            i += 2
        else:
            merged.append(words[i])
            i += 1
    if "toilet" in merged:  # "the seat of the toilet" is not a chair
        merged = [w for w in merged if w != "seat"]
    mentions = [w for w in merged if w in SYNONYMS]
    return mentions, [SYNONYMS[w] for w in mentions]


def image_key(value):
    """Comparable image id: ints and digit strings as the number, COCO file names as their number."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:.*[_/])?0*(\d+)(?:\.(?:jpg|jpeg|png))?", text, re.IGNORECASE)
    return str(int(match.group(1))) if match else text


def chair_scores(captions, gt_objects, extract=None):
    """CHAIR metrics of captions against ground-truth objects.

    captions: list of (image_id, caption text); gt_objects: {image_id: iterable of COCO category names
    or synonyms}. extract: another vocabulary, a function caption -> (mentions, canonical objects) as
    caption_to_objects; the ground-truth names are then taken as canonical objects as they are (the
    synthetic testbed uses this for "red circle"-style objects). Returns {"chair_s", "chair_i", "recall" (all %), "len", "captions", "mentions",
    "hallucinated_mentions", "score" (= chair_s), "per_caption": [...]}. An image without ground truth
    raises ScoringInputError.
    """
    gt = {}
    for image_id, names in gt_objects.items():
        cats = set()
        for name in names:
            key = str(name).lower().strip()
            if extract is not None:
                cats.add(key)
                continue
            if key not in SYNONYMS:
                raise ScoringInputError(f"image {image_id}: unknown object name {name!r} (not a COCO category "
                                        "or synonym)")
            cats.add(SYNONYMS[key])
        gt[image_key(image_id)] = cats
    n_caps = n_halluc_caps = n_mentions = n_halluc = n_words = gt_total = gt_found = 0
    details = []
    for image_id, text in captions:
        key = image_key(image_id)
        if key not in gt:
            raise ScoringInputError(f"no ground-truth objects for image {image_id!r}")
        words, cats = (extract or caption_to_objects)(text)
        hallucinated = [(w, c) for w, c in zip(words, cats) if c not in gt[key]]
        n_caps += 1
        n_halluc_caps += bool(hallucinated)
        n_mentions += len(words)
        n_halluc += len(hallucinated)
        n_words += len(text.split())
        gt_total += len(gt[key])
        gt_found += len(set(cats) & gt[key])
        details.append({"image_id": image_id, "caption": text, "mentioned": sorted(set(cats)),
                        "hallucinated": [w for w, _ in hallucinated], "gt_objects": sorted(gt[key]),
                        "CHAIRs": int(bool(hallucinated)),
                        "CHAIRi": len(hallucinated) / len(words) if words else 0.0})
    if not n_caps:
        raise ScoringInputError("no captions to score")
    chair_s = 100.0 * n_halluc_caps / n_caps
    return {"chair_s": chair_s, "chair_i": 100.0 * n_halluc / n_mentions if n_mentions else 0.0,
            "recall": 100.0 * gt_found / gt_total if gt_total else 0.0, "len": n_words / n_caps,
            "captions": n_caps, "mentions": n_mentions, "hallucinated_mentions": n_halluc,
            "score": chair_s, "per_caption": details}


def load_gt_objects(annotation_file=None, object_lists=None, coco_captions_file=None):
    """{image key: set of COCO categories} from any of: COCO instances JSON, {image_id: [names]} JSON, COCO
    captions JSON (objects named in the reference captions). The sources are united per image."""
    gt = {}

    def add(image_id, names, where):
        cats = gt.setdefault(image_key(image_id), set())
        for name in names:
            key = str(name).lower().strip()
            if key not in SYNONYMS:
                raise ScoringInputError(f"{where}: image {image_id}: unknown object name {name!r}")
            cats.add(SYNONYMS[key])

    for path in [p for p in (annotation_file, object_lists) if p]:
        data = read_json(path, "CHAIR annotation file")
        if isinstance(data, dict) and "annotations" in data:  # COCO instances
            names = {c["id"]: c["name"] for c in field(data, "categories", path)}
            for img in data.get("images", []):
                add(img["id"], [], path)
            for ann in data["annotations"]:
                add(field(ann, "image_id", path), [names[field(ann, "category_id", path)]], path)
        elif isinstance(data, dict):  # {image_id: [names]}
            for image_id, names in data.items():
                if not isinstance(names, list):
                    raise ScoringInputError(f"{path}: image {image_id}: expected a list of object names")
                add(image_id, names, path)
        else:
            raise ScoringInputError(f"{path}: expected COCO instances or a {{image_id: [object names]}} object")
    if coco_captions_file:
        data = read_json(coco_captions_file, "COCO captions file")
        for ann in field(data, "annotations", coco_captions_file):
            add(ann["image_id"], caption_to_objects(ann["caption"])[1], coco_captions_file)
    return gt


def load_captions(cap_file):
    """[(image id, caption text)] from a captions JSONL (image id from image_id, question_id or image)."""
    out = []
    for line, item in enumerate(read_jsonl(cap_file, "CHAIR caption file"), 1):
        image_id = next((item[k] for k in ("image_id", "question_id", "image") if k in item), None)
        if image_id is None:
            raise ScoringInputError(f"{cap_file}:{line}: no image_id, question_id or image field")
        text = item.get("text", item.get("caption"))
        if not isinstance(text, str):
            raise ScoringInputError(f"{cap_file}:{line}: no 'text' field")
        out.append((image_id, text))
    return out


def chair_from_files(cap_file, annotation_file=None, object_lists=None, coco_captions_file=None):
    """chair_scores of a captions JSONL against the given annotation files."""
    if not (annotation_file or object_lists):
        raise ScoringInputError("CHAIR needs --annotation-file and/or --object-lists")
    gt = load_gt_objects(annotation_file, object_lists, coco_captions_file)
    captions = load_captions(cap_file)
    for line, (image_id, _) in enumerate(captions, 1):
        if image_key(image_id) not in gt:
            raise ScoringInputError(f"{cap_file}:{line}: image {image_id!r} is not in the annotations")
    return chair_scores(captions, {k: sorted(v) for k, v in gt.items()})


def build_parser():
    parser = entry_parser("llava.eval.chair", __doc__)
    parser.add_argument("--cap-file", type=str, required=True,
                        help='captions JSONL {"image_id" (or "question_id", or "image"), "text"} (from model_caption)')
    parser.add_argument("--annotation-file", type=str, default=None,
                        help="COCO instances JSON (instances_val2014.json): ground-truth objects per image")
    parser.add_argument("--object-lists", type=str, default=None,
                        help="ground-truth objects as a JSON {image_id: [object names]}")
    parser.add_argument("--coco-captions-file", type=str, default=None,
                        help="COCO captions JSON (captions_val2014.json): also count objects its reference "
                             "captions name")
    parser.add_argument("--out", type=str, default=None, help="metrics plus per-caption details (JSON)")
    parser.add_argument("--score-file", type=str, default=None, help="metrics only (JSON)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        m = chair_from_files(args.cap_file, args.annotation_file, args.object_lists, args.coco_captions_file)
        print("CHAIR_s: {:.1f}  CHAIR_i: {:.1f}  Recall: {:.1f}  Len: {:.1f}  ({} captions)".format(
            m["chair_s"], m["chair_i"], m["recall"], m["len"], m["captions"]))
        if args.out:
            write_json(m, args.out, indent=2)
        write_score_file({k: v for k, v in m.items() if k != "per_caption"}, args.score_file)
        return m

    return run_cli(body)


if __name__ == "__main__":
    main()
