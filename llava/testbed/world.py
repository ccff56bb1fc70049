"""A synthetic world of coloured shapes, in two regimes, with everything true about each picture.

simple:  one or two large objects, or a short printed word or number, on a plain background
         (few distinct things: low effective rank, attention concentrated);
complex: 6 to 15 small objects on a textured, cluttered background (many distinct things).

`sample_scene(rng, regime)` draws a Scene (objects with shape, colour, box; optional word; background),
`render(scene)` paints it at 336 x 336 (the real CLIP-336 geometry: 24 x 24 patches of 14 px), and
the question makers derive questions with their true answers from the scene, so every label is exact.

Each shape also carries its own marking in a darker shade of its colour (circle plain, square horizontal
stripes, triangle vertical stripes, star dots, cross diagonal stripes, diamond checks), so that every
14 px patch of an object shows which shape it belongs to: a vision tower small enough to train on a CPU
then tells shapes apart patch by patch (from outlines alone it barely learns them), and a kept token
carries its object's identity, which is what makes the choice of tokens measurable.
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 336
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS = {
    "red": (220, 35, 35), "green": (35, 170, 60), "blue": (40, 75, 225),
    "yellow": (240, 210, 30), "purple": (145, 50, 190), "orange": (245, 130, 20),
}
PLAIN_BACKGROUNDS = ((250, 250, 250), (232, 232, 228), (215, 222, 230))
WORDS = ("CAT", "SUN", "BOX", "MAP", "KEY", "DOG", "CUP", "HAT", "PEN", "BUS", "OWL", "FOX")
NUMBERS = ("7", "12", "25", "38", "42", "56", "63", "81", "90", "104")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen")


@dataclass
class Obj:
    shape: str
    colour: str
    box: tuple  # (x0, y0, x1, y1)

    @property
    def name(self):
        return f"{self.colour} {self.shape}"

    @property
    def centre(self):
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


@dataclass
class Scene:
    regime: str
    background: tuple
    texture_seed: int = 0
    objects: List[Obj] = field(default_factory=list)
    word: Optional[str] = None

    def names(self):
        return sorted({o.name for o in self.objects})

    def to_dict(self):
        return {"regime": self.regime, "word": self.word,
                "objects": [{"shape": o.shape, "colour": o.colour, "box": list(o.box)} for o in self.objects]}


# ---- sampling -----------------------------------------------------------------------------------------------
def _place(rng, sizes, margin=6, tries=400):
    """Non-overlapping square boxes for the given sizes (None if they do not fit)."""
    boxes = []
    for s in sizes:
        for _ in range(tries):
            x, y = rng.randint(margin, SIZE - s - margin), rng.randint(margin, SIZE - s - margin)
            box = (x, y, x + s, y + s)
            if all(box[2] + margin <= b[0] or b[2] + margin <= box[0] or box[3] + margin <= b[1]
                   or b[3] + margin <= box[1] for b in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def sample_scene(rng, regime):
    """A random scene of the regime ("simple" or "complex"), drawn from `rng` (a random.Random)."""
    if regime == "simple":
        background = rng.choice(PLAIN_BACKGROUNDS)
        if rng.random() < 0.25:
            return Scene(regime, background, word=rng.choice(WORDS + NUMBERS))
        n = rng.choice((1, 2))
        while True:
            boxes = _place(rng, [rng.randint(90, 140) for _ in range(n)], margin=14)
            if boxes:
                break
        pairs = rng.sample([(s, c) for s in SHAPES for c in COLOURS], n)
        return Scene(regime, background, objects=[Obj(s, c, b) for (s, c), b in zip(pairs, boxes)])
    if regime == "complex":
        n = rng.randint(6, 15)
        while True:
            boxes = _place(rng, [rng.randint(26, 40) for _ in range(n)], margin=5)
            if boxes:
                break
        objects = [Obj(rng.choice(SHAPES), rng.choice(list(COLOURS)), b) for b in boxes]
        background = (rng.randint(90, 150), rng.randint(90, 150), rng.randint(90, 150))
        return Scene(regime, background, texture_seed=rng.randint(0, 2**31 - 1), objects=objects)
    raise ValueError(f"regime must be 'simple' or 'complex', got {regime!r}")


# ---- rendering ----------------------------------------------------------------------------------------------
def _polygon(shape, box):
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        return [(cx + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
                 cy - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5)) for i in range(10)]
    if shape == "cross":
        t = r / 3
        return [(cx - t, y0), (cx + t, y0), (cx + t, cy - t), (x1, cy - t), (x1, cy + t), (cx + t, cy + t),
                (cx + t, y1), (cx - t, y1), (cx - t, cy + t), (x0, cy + t), (x0, cy - t), (cx - t, cy - t)]
    raise ValueError(shape)


def _marking(shape, x, y):
    """True where `shape`'s marking is drawn at pixel (x, y) (numpy arrays of absolute coordinates)."""
    if shape == "square":
        return (y // 3) % 2 == 1
    if shape == "triangle":
        return (x // 3) % 2 == 1
    if shape == "star":
        return (x % 6 < 3) & (y % 6 < 3)
    if shape == "cross":
        return ((x + y) // 3) % 2 == 1
    if shape == "diamond":
        return ((x // 4) + (y // 4)) % 2 == 1
    return np.zeros(np.broadcast(x, y).shape, dtype=bool)  # circle: plain


def draw_object(draw, obj, fill=None):
    """Paint obj in its colour (or in `fill`, e.g. an id for a label map), without its marking."""
    colour = COLOURS[obj.colour] if fill is None else fill
    if obj.shape == "circle":
        draw.ellipse(obj.box, fill=colour)
    elif obj.shape == "square":
        draw.rectangle(obj.box, fill=colour)
    else:
        draw.polygon(_polygon(obj.shape, obj.box), fill=colour)


def _texture(draw, scene):
    """Clutter: muted blotches and strokes in the background's hue range (no saturated colours)."""
    import random

    rng = random.Random(scene.texture_seed)
    base = scene.background
    for _ in range(140):
        delta = rng.randint(-50, 50)  # mostly lighter/darker, little hue change
        shade = tuple(max(0, min(255, c + delta + rng.randint(-8, 8))) for c in base)
        x, y, w, h = rng.randint(-20, SIZE), rng.randint(-20, SIZE), rng.randint(6, 40), rng.randint(2, 14)
        if rng.random() < 0.5:
            draw.rectangle((x, y, x + w, y + h), fill=shade)
        else:
            draw.line((x, y, x + w, y + rng.randint(-30, 30)), fill=shade, width=rng.randint(1, 3))


def _mark(image, objects):
    """Overlay each object's marking (a darker shade of its colour) inside its outline."""
    pixels = np.array(image)
    for obj in objects:
        x0, y0, x1, y1 = (int(v) for v in obj.box)
        x1, y1 = min(x1 + 1, SIZE), min(y1 + 1, SIZE)
        inside = Image.new("L", (SIZE, SIZE), 0)
        draw_object(ImageDraw.Draw(inside), obj, fill=255)
        inside = np.asarray(inside)[y0:y1, x0:x1] > 0
        ys, xs = np.mgrid[y0:y1, x0:x1]
        where = inside & _marking(obj.shape, xs, ys)
        pixels[y0:y1, x0:x1][where] = [int(0.55 * c) for c in COLOURS[obj.colour]]
    image.paste(Image.fromarray(pixels))


def render(scene):
    """The scene as a 336 x 336 RGB PIL image."""
    image = Image.new("RGB", (SIZE, SIZE), scene.background)
    draw = ImageDraw.Draw(image)
    if scene.regime == "complex":
        _texture(draw, scene)
    for obj in scene.objects:
        draw_object(draw, obj)
    if scene.objects:
        _mark(image, scene.objects)
    if scene.word:
        draw_word(draw, scene.word)
    return image


def draw_word(draw, word, fill=(20, 20, 20)):
    """Print `word` centred, in black (or in `fill`, e.g. 255 for a mask)."""
    font = ImageFont.load_default(size=110 if len(word) <= 2 else 90)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    draw.text(((SIZE - (right - left)) / 2 - left, (SIZE - (bottom - top)) / 2 - top), word, fill=fill, font=font)


# ---- language about a scene -----------------------------------------------------------------------------------
def plural(shape):
    return shape + ("es" if shape.endswith("s") else "s")


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def caption(scene):
    """A one-sentence caption naming every object (or the word), used for stage 1 and as the reference."""
    if scene.word:
        kind = "number" if scene.word.isdigit() else "word"
        return f"The {kind} {scene.word} is written in black on a plain background."
    parts = [f"{article(o.colour)} {o.colour} {o.shape}" for o in sorted(scene.objects, key=lambda o: (o.centre[0], o.centre[1]))]
    listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if scene.regime == "simple":
        return f"A plain background with {listing}."
    return f"A cluttered background with {NUMBER_WORDS[len(parts)]} small shapes: {listing}."
