"""The offline demo task: a small sentiment task the project writes itself, in the GLUE SST-2 layout.

Sentences are built from templates over real English words, with negation ("not good" is negative) and
intensifiers, so that word order matters a little and a bag of words is not quite enough. Deterministic by seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from adabert.core.fileio import atomic_write_bytes

POSITIVE = ["good", "great", "wonderful", "delightful", "moving", "brilliant", "charming", "funny", "clever",
            "beautiful", "gripping", "fresh", "touching", "superb", "enjoyable"]
NEGATIVE = ["bad", "boring", "dull", "awful", "tedious", "clumsy", "predictable", "bland", "terrible", "weak",
            "lifeless", "messy", "shallow", "painful", "forgettable"]
SUBJECTS = ["the movie", "this film", "the story", "the acting", "the script", "the ending", "the cast",
            "the soundtrack", "the director's latest work", "the plot", "the dialogue", "the whole thing"]
VERBS = ["is", "was", "feels", "seems", "turns out to be", "remains"]
INTENSIFIERS = ["", "", "very ", "really ", "truly ", "rather ", "quite "]
TAILS = ["", "", " from start to finish", " , honestly", " for most of its running time", " in every scene",
         " despite the hype", " overall"]


def demo_sentence(rng: random.Random) -> tuple[str, int]:
    """One sentence and its label (1 positive, 0 negative)."""
    positive = rng.random() < 0.5
    negated = rng.random() < 0.3
    word = rng.choice(POSITIVE if positive != negated else NEGATIVE)
    neg = "not " if negated else ""
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {neg}{rng.choice(INTENSIFIERS)}{word}{rng.choice(TAILS)}"
    if rng.random() < 0.25:
        other = rng.choice(POSITIVE + NEGATIVE)
        text = f"{text} , though the {rng.choice(['music', 'pacing', 'camera work'])} is {other}"
    return text, int(positive)


def write_demo_task(folder: Path, train_size: int = 2000, dev_size: int = 400, seed: int = 0) -> Path:
    """Write train.tsv and dev.tsv (header `sentence\\tlabel`) into `folder`; return it."""
    rng = random.Random(seed)
    folder = Path(folder)
    for name, n in (("train.tsv", train_size), ("dev.tsv", dev_size)):
        rows = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in (demo_sentence(rng) for _ in range(n))]
        atomic_write_bytes(folder / name, ("\n".join(rows) + "\n").encode("utf-8"))
    return folder
