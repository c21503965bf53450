"""Writes the two small sample corpora the README's sequence commands train on.

Both come from one toy grammar (determiners, adjectives, nouns, verbs,
adverbs, prepositions), drawn with a fixed seed, so they are reproducible and
owe nothing to any published corpus:

    python3 examples/data/make_samples.py     # writes tiny.conllu and tiny.txt here
"""

import random
from pathlib import Path

WORDS = {
    "DET": ["the", "a", "every", "this"],
    "ADJ": ["small", "deep", "quick", "sparse", "hidden", "noisy"],
    "NOUN": ["network", "gradient", "layer", "neuron", "student", "weight", "model", "graph"],
    "VERB": ["computes", "updates", "trains", "stores", "follows", "reads"],
    "ADV": ["slowly", "exactly", "again", "carefully"],
    "ADP": ["with", "from", "through", "after"],
    "PUNCT": ["."],
}


def noun_phrase(rng):
    words = [("DET", rng.choice(WORDS["DET"]))]
    if rng.random() < 0.5:
        words.append(("ADJ", rng.choice(WORDS["ADJ"])))
    return words + [("NOUN", rng.choice(WORDS["NOUN"]))]


def sentence(rng):
    words = noun_phrase(rng) + [("VERB", rng.choice(WORDS["VERB"]))] + noun_phrase(rng)
    if rng.random() < 0.4:
        words += [("ADP", rng.choice(WORDS["ADP"]))] + noun_phrase(rng)
    if rng.random() < 0.3:
        words.append(("ADV", rng.choice(WORDS["ADV"])))
    return words + [("PUNCT", ".")]


def main(folder=Path(__file__).resolve().parent, count=240, seed=7):
    rng = random.Random(seed)
    sentences = [sentence(rng) for _ in range(count)]
    with open(folder / "tiny.conllu", "w", encoding="utf-8", newline="\n") as f:
        for k, words in enumerate(sentences, start=1):
            f.write(f"# sent_id = tiny-{k}\n")
            for i, (tag, word) in enumerate(words, start=1):
                f.write(f"{i}\t{word}\t{word}\t{tag}\t_\t_\t_\t_\t_\t_\n")
            f.write("\n")
    with open(folder / "tiny.txt", "w", encoding="utf-8", newline="\n") as f:
        for words in sentences:
            f.write(" ".join(word for _, word in words) + "\n")


if __name__ == "__main__":
    main()
