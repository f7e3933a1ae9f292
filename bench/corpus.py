"""Natural text for the benchmarks, offline: the English chatterbot corpus (installed with the dev extras)."""

from __future__ import annotations

from pathlib import Path


def chatterbot_samples() -> tuple[list[str], list[str]]:
    """(even categories, odd categories) of the English chatterbot corpus, each conversation joined into one text:
    two disjoint samples, e.g. one to build from and one to evaluate on."""
    import chatterbot_corpus
    import yaml

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    even, odd = [], []
    for index, path in enumerate(sorted(root.glob("*.yml"))):
        conversations = yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []
        texts = [" ".join(str(turn) for turn in conv) for conv in conversations if conv]
        (even if index % 2 == 0 else odd).extend(texts)
    return even, odd
