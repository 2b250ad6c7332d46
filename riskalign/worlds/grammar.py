"""A small probabilistic grammar of movie reviews: the text of the embedded world.

Each review has a latent mood (positive, negative or mixed) that tilts which
adjectives its clauses use; intensifiers, negation ("not good") and a few rare,
strongly negative words give the sentiment reward a realistic spread and a
lower tail. Everything is lower-case words and punctuation tokens separated by
single spaces, so a word-level tokenizer covers it exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

SUBJECTS = (
    "the movie", "this movie", "the film", "this film", "the story", "the plot",
    "the acting", "the cast", "the lead actor", "the lead actress", "the director",
    "the script", "the dialogue", "the ending", "the opening", "the soundtrack",
    "the music", "the score", "the pacing", "the camera work", "the editing",
    "the villain", "the hero", "the humor", "the romance", "the action",
    "the second half", "the first act", "the final scene", "the costumes",
    "the effects", "the sequel", "the characters", "the twist", "the setting",
)
VERBS = ("was", "is", "felt", "seemed", "looked", "sounded", "remained", "became")
INTENSIFIERS = (
    "very", "really", "so", "quite", "truly", "incredibly", "extremely",
    "absolutely", "rather", "pretty", "fairly", "somewhat",
)
POSITIVE = (
    "good", "great", "wonderful", "superb", "brilliant", "charming", "fun",
    "enjoyable", "beautiful", "lovely", "fantastic", "excellent", "delightful",
    "clever", "hilarious", "stunning", "amazing", "awesome", "impressive",
    "fresh", "sweet", "smart", "funny", "warm", "perfect", "strong", "nice",
    "pleasant", "engaging", "inspiring", "touching", "memorable", "thrilling",
    "exciting", "powerful", "elegant", "entertaining", "magnificent", "glorious",
    "outstanding",
)
NEGATIVE = (
    "bad", "boring", "dull", "awful", "terrible", "weak", "horrible", "poor",
    "sad", "tragic", "stupid", "ugly", "annoying", "painful", "lame", "messy",
    "confusing", "disappointing", "clumsy", "cheap", "wrong", "worse", "silly",
    "tired", "lifeless", "tiresome", "bland", "shallow", "hollow", "unpleasant",
    "irritating", "frustrating", "pathetic", "dreadful", "miserable", "useless",
    "ridiculous", "awkward", "sloppy", "uninspired",
)
NEUTRAL = (
    "long", "short", "slow", "fast", "quiet", "loud", "dark", "bright", "simple",
    "complex", "predictable", "unusual", "familiar", "strange", "old", "new",
    "modern", "classic", "serious", "light", "busy", "calm", "plain", "odd",
    "typical", "different", "colorful", "gray", "heavy", "young", "realistic",
    "subtle", "obvious", "noisy", "steady", "formal", "grand", "small", "big",
    "expected",
)
# Rare words that VADER scores far below the common negatives: the lower tail.
STRONGLY_NEGATIVE = (
    "vile", "horrendous", "disgusting", "nasty", "sickening", "hateful",
    "repulsive", "despicable",
)
OPENERS = (
    "i watched this movie last night .", "i saw this film at the cinema .",
    "we rented this movie on a rainy sunday .", "my friends and i saw it yesterday .",
    "i went to see this film with my family .", "this is a film about a small town .",
    "this is a movie about two brothers .", "this is a story about a lost dog .",
    "i had heard a lot about this movie .", "i finally watched the whole series .",
    "this film is based on a famous novel .", "the trailer made me curious .",
    "it is a war movie set in the desert .", "it is a comedy about a wedding .",
    "it is a thriller about a missing girl .", "it is a musical about a young singer .",
    "the film runs for almost three hours .", "i watched it on a long flight .",
)
VERDICTS = {
    "positive": (
        "i loved it .", "i would watch it again .", "i recommend it to everyone .",
        "a real gem .", "worth every minute .", "i enjoyed every minute .",
        "a must see .", "ten out of ten .",
    ),
    "negative": (
        "i hated it .", "i want my money back .", "avoid this one .",
        "a waste of time .", "i fell asleep .", "do not bother .",
        "what a mess .", "one out of ten .",
    ),
    "mixed": (
        "it was okay .", "not the best , not the worst .", "maybe watch it once .",
        "it has its moments .", "it is fine for a sunday .", "five out of ten .",
    ),
}
CONNECTORS = (",", "and", "but", "while", "although", "because", "yet", ".")
MOODS = ("positive", "negative", "mixed")

# Probability of a clause's polarity given the review's mood.
_POLARITY_GIVEN_MOOD = {
    "positive": {"positive": 0.70, "negative": 0.10, "neutral": 0.20},
    "negative": {"positive": 0.10, "negative": 0.70, "neutral": 0.20},
    "mixed": {"positive": 0.35, "negative": 0.35, "neutral": 0.30},
}
STRONG_NEGATIVE_RATE = 0.04  # chance that a negative clause uses a tail word
NEGATION_RATE = 0.12
INTENSIFIER_RATE = 0.35


def vocabulary() -> list[str]:
    """Every word the grammar can emit, sorted, without duplicates."""
    words: set[str] = set(INTENSIFIERS + POSITIVE + NEGATIVE + NEUTRAL + STRONGLY_NEGATIVE)
    words.update(VERBS + CONNECTORS + ("not",))
    for phrase in SUBJECTS + OPENERS + sum(VERDICTS.values(), ()):
        words.update(phrase.split())
    return sorted(words)


def _clause(rng: random.Random, mood: str) -> str:
    weights = _POLARITY_GIVEN_MOOD[mood]
    polarity = rng.choices(list(weights), weights=list(weights.values()))[0]
    if polarity == "positive":
        adjective = rng.choice(POSITIVE)
    elif polarity == "negative":
        tail = rng.random() < STRONG_NEGATIVE_RATE
        adjective = rng.choice(STRONGLY_NEGATIVE if tail else NEGATIVE)
    else:
        adjective = rng.choice(NEUTRAL)
    words = [rng.choice(SUBJECTS), rng.choice(VERBS)]
    if polarity != "neutral" and rng.random() < NEGATION_RATE:
        words.append("not")
    if rng.random() < INTENSIFIER_RATE:
        words.append(rng.choice(INTENSIFIERS))
    words.append(adjective)
    return " ".join(words)


def review(rng: random.Random) -> str:
    """One review: an optional opener, 2-4 connected clauses and an optional verdict."""
    mood = rng.choice(MOODS)
    parts = [rng.choice(OPENERS)] if rng.random() < 0.5 else []
    clauses = [_clause(rng, mood) for _ in range(rng.randint(2, 4))]
    body = clauses[0]
    for clause in clauses[1:]:
        body += f" {rng.choice(CONNECTORS)} {clause}"
    parts.append(body + " .")
    if rng.random() < 0.6:
        parts.append(rng.choice(VERDICTS[mood]))
    return " ".join(parts)


def reviews(count: int, seed: int) -> Iterator[str]:
    """`count` reviews, the same for the same seed."""
    rng = random.Random(seed)
    for _ in range(count):
        yield review(rng)


def review_prompt(rng: random.Random, min_words: int, max_words: int) -> str:
    """A review opening to be continued: its first few words, never the whole review."""
    words = review(rng).split()
    keep = rng.randint(min_words, max_words)
    return " ".join(words[: min(keep, len(words) - 1)])
