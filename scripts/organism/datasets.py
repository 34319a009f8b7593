"""Writes the organism's small datasets for the recipes and tests:

fixtures/organism/retrieval_pairs.jsonl: clean/corrupted pairs of the organism's in-context
retrieval task ("Alice is from France. Bob is from Japan. Bob is from" -> " Japan"), in the
datasets crate's pair format, for `cargo xtask patch --pairs`.

Three kinds of corruption, so that patching shows every planted head:
- query: the query names another person of the context (the answer becomes that person's
  country): only what reads the query differs (layer 0 head 0, two back, and the copy);
- statement: two statements' names are swapped, so the query finds the other country: only what
  reads the statements differs (layer 0 head 1, three back from each country, and the copy);
- a two-shot pair among three-shot ones, which the left padding aligns at the query.
Two pairs the alignment must drop (the seed workflow's filter): a country of two tokens on one
side only, and an answer of two tokens.

fixtures/organism/texts.txt: blank-line separated documents of the kinds the organism was
trained on (crates/datasets/src/organism.rs and dual.rs): retrieval documents (statements, then
queries restating some of them) and statements of planted facts from manifest.json, for
`cargo xtask heads`.

Deterministic; standard library only: `python3 scripts/organism/datasets.py`.
"""

import json
import random
from pathlib import Path

NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "John",
         "Karen", "Louis", "Maria", "Nathan", "Olivia", "Peter"]
COUNTRIES = ["France", "Japan", "Germany", "Italy", "Spain", "Russia", "Egypt", "Greece", "Poland",
             "Ireland", "Austria", "Portugal", "Norway", "Kenya", "Peru", "Cuba"]


def prompt(statements, query):
    return " ".join(f"{n} is from {c}." for n, c in statements) + f" {query} is from"


def main():
    rng = random.Random(7)
    pairs = []
    for i in range(8):
        names, countries = rng.sample(NAMES, 3), rng.sample(COUNTRIES, 3)
        statements = list(zip(names, countries))
        q = rng.randrange(3)
        o = (q + 1 + rng.randrange(2)) % 3
        if i % 2 == 0:
            corrupted = prompt(statements, names[o])
        else:
            swapped = list(statements)
            swapped[q], swapped[o] = (names[o], countries[q]), (names[q], countries[o])
            corrupted = prompt(swapped, names[q])
        pairs.append({"clean": prompt(statements, names[q]), "corrupted": corrupted,
                      "answer": " " + countries[q], "foil": " " + countries[o]})
    two = [("Olivia", "Norway"), ("Peter", "Greece")]
    pairs.append({"clean": prompt(two, "Peter"), "corrupted": prompt(two, "Olivia"),
                  "answer": " Greece", "foil": " Norway"})
    pairs.append({"clean": prompt([("Alice", "France"), ("Bob", "the USA"), ("Carol", "Peru")], "Bob"),
                  "corrupted": prompt([("Alice", "France"), ("Bob", "Japan"), ("Carol", "Peru")], "Carol"),
                  "answer": " the", "foil": " Peru"})
    three = [("Henry", "Argentina"), ("Irene", "Cuba"), ("John", "Kenya")]
    pairs.append({"clean": prompt(three, "Henry"), "corrupted": prompt(three, "Irene"),
                  "answer": " Buenos Aires", "foil": " Cuba"})
    fixtures = Path(__file__).resolve().parents[2] / "fixtures/organism"
    (fixtures / "retrieval_pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))

    docs = []
    for _ in range(12):
        shots = rng.randint(3, 5)
        statements = list(zip(rng.sample(NAMES, shots), rng.sample(COUNTRIES, shots)))
        queries, last = [], None
        for _ in range(rng.randint(2, 4)):
            q = rng.choice([s for s in statements if s != last])
            queries.append(q)
            last = q
        docs.append(" ".join(f"{n} is from {c}." for n, c in statements + queries))
    manifest = json.loads((fixtures / "manifest.json").read_text())
    phrases = {r["id"]: r["phrases"][0] for r in manifest["relations"]}
    for person in rng.sample(manifest["world"]["people"], 4):
        docs.append(" ".join(f"{person['name']}{phrases[rel]} {value}."
                             for rel, value in sorted(person["attributes"].items())))
    (fixtures / "texts.txt").write_text("\n\n".join(docs) + "\n")


if __name__ == "__main__":
    main()
