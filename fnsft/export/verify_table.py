"""Rich tables of a verification report (kept apart from verify.py so printing needs no torch)."""

from __future__ import annotations

from typing import Any

from fnsft.export.verify import LIMITS, VerifyReport


def verification_tables(report: VerifyReport) -> list[Any]:
    """The parity table (one row per compared pair), greedy continuations, and the metadata verdicts."""
    from rich.table import Table

    parity = Table(title=f"verification on {report.data_source}")
    for column in ("export", "vs", "mean KL", "top-1", "ppl ref → export", "greedy (first diff)", "verdict"):
        parity.add_column(column, justify="right" if column in ("mean KL", "top-1") else "left")
    for pair in report.pairs:
        limit = LIMITS[pair.candidate]
        ok = pair.mean_kl <= limit.max_mean_kl and pair.top1_agreement >= limit.min_top1
        same = sum(g.first_difference is None for g in pair.greedy)
        first = [g for g in pair.greedy if g.first_difference is not None]
        greedy = f"{same}/{len(pair.greedy)} equal" + (
            f"; @{first[0].first_difference}: {first[0].reference_token!r}→{first[0].candidate_token!r}" if first else "")
        parity.add_row(pair.candidate, pair.reference, f"{pair.mean_kl:.2e}", f"{pair.top1_agreement:.1%}",
                       f"{pair.perplexity_reference:.2f} → {pair.perplexity_candidate:.2f}", greedy,
                       "[green]ok[/]" if ok else "[red]FAILED[/]")
    checks = Table(title="metadata")
    for column in ("export", "check", "verdict", "detail"):
        checks.add_column(column)
    for check in report.checks:
        if check.name in ("mean token KL", "top-1 agreement"):
            continue
        checks.add_row(check.subject, check.name, "[green]ok[/]" if check.passed else "[red]FAILED[/]", check.detail)
    timing = f"verification {report.seconds:.1f} s on {report.device}" + (
        f" (export {report.export_seconds:.1f} s)" if report.export_seconds is not None else "") + (
        ": " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in report.step_seconds.items()))
    return [parity, checks, *report.notes, timing]
