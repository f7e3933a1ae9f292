"""Generate the quickstart dataset: short questions with exact answers, so accuracy before/after is measurable.

Three task families, all answerable with one short reply: the successor of a number, a single-digit sum,
and the capital of a country. The base SmolLM2-135M-Instruct tends to answer verbosely or wrongly;
a LoRA fine-tune teaches it the answers and the terse format. Deterministic (seeded): re-running rewrites
the same file.

    python scripts/make_quickstart_data.py            # writes data/quickstart/tasks.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Russia": "Moscow", "Egypt": "Cairo",
    "Kenya": "Nairobi", "Canada": "Ottawa", "Mexico": "Mexico City", "Brazil": "Brasilia", "Argentina": "Buenos Aires",
    "Peru": "Lima", "Chile": "Santiago", "Australia": "Canberra", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Austria": "Vienna", "Greece": "Athens",
    "Turkey": "Ankara", "Ireland": "Dublin", "Belgium": "Brussels", "Netherlands": "Amsterdam", "Hungary": "Budapest",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Indonesia": "Jakarta", "Philippines": "Manila", "Iran": "Tehran",
    "Iraq": "Baghdad", "Cuba": "Havana", "Colombia": "Bogota", "Morocco": "Rabat", "Nigeria": "Abuja",
    "Ghana": "Accra", "Ethiopia": "Addis Ababa", "Ukraine": "Kyiv", "Czechia": "Prague", "Romania": "Bucharest",
    "Bulgaria": "Sofia", "Serbia": "Belgrade", "Croatia": "Zagreb", "Switzerland": "Bern", "Iceland": "Reykjavik",
}


def successor(rng: random.Random) -> dict:
    n = rng.randint(1, 998)
    return {"instruction": f"What number comes after {n}?", "output": str(n + 1)}


def digit_sum(rng: random.Random) -> dict:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return {"instruction": f"What is {a} + {b}?", "output": str(a + b)}


def capital(rng: random.Random) -> dict:
    country = rng.choice(sorted(CAPITALS))
    return {"instruction": f"What is the capital of {country}?", "output": CAPITALS[country]}


def generate(rows: int = 600, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    makers = [successor, digit_sum, capital]
    return [makers[i % len(makers)](rng) for i in range(rows)]


def main() -> None:
    target = Path(__file__).resolve().parents[1] / "data" / "quickstart" / "tasks.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(row) + "\n" for row in generate()), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
