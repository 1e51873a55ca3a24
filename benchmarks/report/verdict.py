"""The verdict: which of the paper's claims the runs in a directory reproduce.

Each claim the runs can test gets a mark — ``holds``, ``fails`` or ``not tested`` —
the numbers it rests on and a significance test over trials (:mod:`siambench.benchmarks.report.stats`):

1. *Stop-gradient prevents collapse* (paper Sec. 4.1, Fig. 2: without it the output std
   goes to 0, the loss to -1 and ImageNet linear accuracy to 0.1 %): the no-stop-grad
   entry's collapse monitor fired (or its final std is below the monitor's limit), its
   kNN / linear top-1 is within 5 points of chance or 15 below SimSiam's, and SimSiam's
   own output did not collapse.
2. *SimSiam beats a random-init encoder*: linear top-1 by >= 0 points, kNN by >= 7; entries
   that share a label are pretraining seeds of one row, and with more than one seed the test runs
   over seeds (Welch, or a pooled-variance t when one side has a single run).
3. *SimSiam beats scratch in transfer* (Table 5: +39.6 VOC07 AP50 for SimSiam base):
   AP50 by >= 5 points and AP by > 0, per task; *supervised beats scratch* likewise
   (the benchmark's own sanity: pretraining must matter).
4. *SimSiam transfers on par with supervised pre-training* (Table 5: SimSiam base is
   -0.7 to +4.6 AP against ImageNet supervised): Δ >= -1 point, per task.
5. On real data only, *reproduction* of the paper's rows: our SimSiam, supervised and
   scratch within 1 point of Table 5 (SimSiam base, ImageNet supervised, scratch) and
   our SimSiam linear top-1 within 1 point of Table 4 at the same epochs.
6. On the synthetic data only, the demo's target *supervised linear top-1 >= 90 %*; for a pipeline
   whose file sets a ``BUDGET`` (the demo's: 20 minutes, 1 GB), *the steps take <= BUDGET.MINUTES*
   and *the run writes <= BUDGET.DISK_GB to disk* (:mod:`.budget`).

The thresholds of 1-3 are the demo's targets (:data:`.claims.THRESHOLDS`, measured by ``make demo``).
A mark compares the mean difference with the threshold; the test column says how sure
that is: Welch's t (one-sided, H0: Δ <= threshold) with the 95 % interval of Δ, or
"n=1: no test" when a side has one trial — one run has no spread to test against. With
n >= 2 per side a claim "holds" only when the test agrees (one-sided p < 0.05 and the 95 %
interval above the threshold); a mean above the threshold that the test does not support is
"not significant", its own mark.
Entries are matched to roles by their pipeline kind (``random_init``, ``scratch``,
``supervised``, ``simsiam``); a ``simsiam`` entry whose resolved pretraining config has
``MODEL.STOP_GRAD False`` is the no-stop-grad ablation.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from siambench.pretrain.collapse import CollapseMonitor

from . import reference
from .budget import budget_claims
from .claims import SIGNIFICANCE, THRESHOLDS, Claim
from .metrics import read_metrics
from .results import RunResults, is_own_task, is_synthetic_task
from .stats import TestResult, one_sample, seed_test, welch

__all__ = ["build_verdict"]

_PAPER_ROW = {"simsiam": "SimSiam, base", "supervised": "ImageNet supervised", "scratch": "scratch"}


# ----------------------------------------------------------------------------- inputs


@dataclass
class _Pretrain:
    """What a pretraining run's files say about collapse."""

    stop_grad: bool = True
    dim: int = 2048
    limit: float = math.nan  # the collapse monitor's limit: threshold / sqrt(d)
    final_std: float | None = None  # mean z_std over the last 10 % of logged steps
    final_loss: float | None = None
    fired: bool = False  # the monitor's warning is in the log, or a replay of its rule fires


def _yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _pretrain_info(run_dir: Path) -> _Pretrain | None:
    cfg = _yaml(run_dir / "config.yaml")
    metrics = run_dir / "metrics.jsonl"
    if not cfg and not metrics.is_file():
        return None
    monitor = CollapseMonitor.from_config(cfg)  # the training monitor's rule, replayed over the step records
    info = _Pretrain(stop_grad=(cfg.get("MODEL") or {}).get("STOP_GRAD", True) is not False,
                     dim=monitor.dim, limit=monitor.limit)
    steps = read_metrics(metrics)[0] if metrics.is_file() else []
    stds = [r["z_std"] for r in steps if isinstance(r.get("z_std"), (int, float)) and math.isfinite(r["z_std"])]
    losses = [r["loss"] for r in steps if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    if stds:
        tail = stds[-max(1, len(stds) // 10):]
        info.final_std = statistics.fmean(tail)
        info.fired = monitor.replay(steps)
    if losses:
        info.final_loss = statistics.fmean(losses[-max(1, len(losses) // 10):])
    log = run_dir / "log.txt"
    if log.is_file() and "representation collapse" in log.read_text(encoding="utf-8", errors="replace"):
        info.fired = True
    return info


def _roles(res: RunResults) -> tuple[dict[str, str], dict[str, Path]]:
    """label -> role (simsiam | no_stop_grad | random_init | supervised | scratch) and label -> entry dir."""
    dirs: dict[str, Path] = {}
    for name, entry in (res.state.get("entries") or {}).items():
        dirs[entry.get("label", name)] = res.root / name
    for e in res.evals:
        dirs.setdefault(e.label, res.root / e.entry)
    for t in res.transfer:
        rel = t.path.relative_to(res.root).parts
        dirs.setdefault(t.label, res.root / rel[0] if len(rel) > 1 else res.root)
    roles = {}
    for label in dirs:
        kind = res.kinds.get(label, "")
        if kind in ("random_init", "supervised", "scratch"):
            roles[label] = kind
        elif kind == "simsiam" or (not kind and "simsiam" in label.lower()) or \
                (kind == "checkpoint" and "simsiam" in label.lower()):
            info = _pretrain_info(dirs[label] / "pretrain")
            roles[label] = "no_stop_grad" if info is not None and not info.stop_grad else "simsiam"
        elif not kind and "random" in label.lower():
            roles[label] = "random_init"
    return roles, dirs


def _top1(res: RunResults, label: str, protocol: str) -> list[float]:
    return [e.top1 for e in res.evals if e.label == label and e.protocol == protocol and math.isfinite(e.top1)]


def _ap(res: RunResults, label: str, task: str, rtype: str, metric: str) -> list[float]:
    vals = [t.results.get(rtype, {}).get(metric, math.nan) for t in res.transfer if t.label == label and t.task == task]
    return [v for v in vals if math.isfinite(v)]


# ----------------------------------------------------------------------------- claims


def _fmt(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    std = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{mean:.1f}{std} (n={len(values)})"


def _test_text(r: TestResult | None, n_a: int, n_b: int | None) -> str:
    if r is None:
        sides = f"n={n_a}" + (f" vs n={n_b}" if n_b is not None else "")
        return f"{sides}: no test (a side has one trial)"
    h0 = f"Δ <= {r.threshold:+.1f}"
    return (f"{r.name}, one-sided p = {r.p_greater:.3g} (H0: {h0}); Δ 95% CI [{r.ci[0]:+.1f}, {r.ci[1]:+.1f}]; "
            f"n={n_a}" + (f" vs {n_b}" if n_b is not None else f", df={r.df:.0f}"))


def _val_sampling(res: RunResults, a_label: str, b_label: str, protocol: str) -> str:
    """For one evaluation per side: the 95 % interval of Δ from val-set sampling alone (binomial)."""
    ev = {lb: [e for e in res.evals if e.label == lb and e.protocol == protocol and math.isfinite(e.top1)]
          for lb in (a_label, b_label)}
    if any(len(v) != 1 or v[0].num_val is None for v in ev.values()):
        return ""
    (ea,), (eb,) = ev[a_label], ev[b_label]
    var = sum((e.top1 / 100) * (1 - e.top1 / 100) / e.num_val for e in (ea, eb))
    half, diff = 196.0 * math.sqrt(var), ea.top1 - eb.top1
    return (f"; val-set sampling alone (binomial, {ea.num_val} / {eb.num_val} images): Δ 95% CI "
            f"[{diff - half:+.1f}, {diff + half:+.1f}], seed-to-seed spread not included")


def _compare(claim: str, source: str, a_label: str, a: list[float], b_label: str, b: list[float],
             threshold: float, unit: str, extra: str = "", test: Callable = welch) -> Claim:
    """``mean(a) - mean(b) >= threshold`` with ``test`` (Welch's by default; ``extra``: appended to the
    test text when there is no test)."""
    if not a or not b:
        missing = ", ".join(lb for lb, v in ((a_label, a), (b_label, b)) if not v)
        return Claim(claim, source, "not tested", f"no {unit} result for {missing}", "–")
    diff = statistics.fmean(a) - statistics.fmean(b)
    r = test(a, b, threshold)
    values = {"a": a_label, "b": b_label, "a_mean": statistics.fmean(a), "b_mean": statistics.fmean(b), "diff": diff,
              "threshold": threshold, "n_a": len(a), "n_b": len(b),
              "p": None if r is None else r.p_greater, "ci": None if r is None else list(r.ci)}
    evidence = f"{a_label} {_fmt(a)} vs {b_label} {_fmt(b)}: Δ {diff:+.1f} (needs >= {threshold:+.1f})"
    return Claim(claim, source, _mark(diff, threshold, r), evidence,
                 _test_text(r, len(a), len(b)) + (extra if r is None else ""), values)


def _mark(diff: float, threshold: float, r: TestResult | None) -> str:
    """``holds`` / ``fails`` from the point estimate; with a test (n >= 2 per side) a point estimate at or
    above the threshold holds only if the test agrees (one-sided p < SIGNIFICANCE and the whole 95 %
    interval of Δ above the threshold), else it is ``not significant``."""
    if diff < threshold:
        return "fails"
    if r is None or (r.p_greater < SIGNIFICANCE and r.ci[0] > threshold):
        return "holds"
    return "not significant"


def _eval_claims(res: RunResults, sim: str, rand: str) -> list[Claim]:
    """SimSiam against random init on linear and kNN top-1: one value per pretraining seed (entries that
    share a label), tested over seeds (:func:`.stats.seed_test`) where a side has more than one."""
    out = []
    for protocol, key, name in (("lincls", "linear_vs_random", "linear"), ("knn", "knn_vs_random", "kNN")):
        a, b = _top1(res, sim, protocol), _top1(res, rand, protocol)
        out.append(_compare(f"SimSiam beats a random-init encoder: {name} top-1 (Δ >= +{THRESHOLDS[key]:.0f})",
                            "the demo's target (the paper's premise: pretraining learns features)",
                            sim, a, rand, b, THRESHOLDS[key], f"{name} top-1",
                            _val_sampling(res, sim, rand, protocol), test=seed_test))
        if len(a) + len(b) > 2:
            out[-1].test += "; one value per pretraining seed (seed-to-seed spread included)"
    return out


def _collapse(res: RunResults, roles: dict[str, str], dirs: dict[str, Path]) -> list[Claim]:
    claim = "stop-gradient prevents collapse: without it the output std -> 0 and accuracy falls to chance"
    source = "paper Sec. 4.1, Fig. 2 (ImageNet linear 0.1 % without stop-grad)"
    sims = [lb for lb, r in roles.items() if r == "simsiam"]
    out = []
    for label in [lb for lb, r in roles.items() if r == "no_stop_grad"] or [None]:
        info = _pretrain_info(dirs[label] / "pretrain") if label else None
        if label is None or info is None or info.final_std is None:
            why = "no no-stop-grad entry" if label is None else f"{label}: no metrics.jsonl with z_std"
            out.append(Claim(claim, source, "not tested", why, "–"))
            continue
        checks, parts = [], []
        collapsed = info.fired or info.final_std < info.limit
        checks.append(collapsed)
        parts.append(f"{label}: monitor {'fired' if info.fired else 'did not fire'}, final z_std {info.final_std:.2e} "
                     f"(limit {info.limit:.2e}, healthy 1/sqrt(d) = {1 / math.sqrt(info.dim):.2e})"
                     + (f", loss {info.final_loss:.3f}" if info.final_loss is not None else ""))
        ref = sims[0] if sims else None
        ref_info = _pretrain_info(dirs[ref] / "pretrain") if ref else None
        if ref_info is not None and ref_info.final_std is not None:
            healthy = not ref_info.fired and ref_info.final_std >= ref_info.limit
            checks.append(healthy)
            parts.append(f"{ref}: final z_std {ref_info.final_std:.2e}, monitor "
                         f"{'fired' if ref_info.fired else 'quiet'}")
        classes = next((e.num_classes for e in res.evals if e.num_classes), None)
        chance = 100.0 / classes if classes else None
        for protocol in ("lincls", "knn"):
            acc = _top1(res, label, protocol)
            if not acc:
                continue
            mean = statistics.fmean(acc)
            sim_acc = _top1(res, ref, protocol) if ref else []
            near = chance is not None and mean <= chance + THRESHOLDS["collapse_near_chance"]
            below = bool(sim_acc) and mean <= statistics.fmean(sim_acc) - THRESHOLDS["collapse_below_simsiam"]
            checks.append(near or below)
            extra = ([f"chance {chance:.1f}"] if chance is not None else []) + \
                ([f"{ref} {statistics.fmean(sim_acc):.1f}"] if sim_acc else [])
            parts.append(f"{protocol} {mean:.1f}" + (f" ({', '.join(extra)})" if extra else ""))
        mark = "holds" if all(checks) else "fails"
        out.append(Claim(claim, source, mark, "; ".join(parts), "n=1 run each: no test (z_std and accuracy per run)",
                         {"entry": label, "final_z_std": info.final_std, "limit": info.limit, "fired": info.fired,
                          "chance": chance}))
    return out


def _transfer_claims(res: RunResults, roles: dict[str, str], synthetic: bool) -> list[Claim]:
    tasks = sorted({t.task for t in res.transfer if is_synthetic_task(t.task) == synthetic or is_own_task(t.task)})
    by_role = {r: [lb for lb, x in roles.items() if x == r] for r in ("simsiam", "supervised", "scratch")}
    out = []
    pairs = [("simsiam", "scratch", "SimSiam beats training from scratch", "paper Table 5; threshold: the demo's target"),
             ("supervised", "scratch", "supervised pre-training beats scratch (pre-training matters)",
              "paper Table 5; threshold: the demo's target"),
             ("simsiam", "supervised", "SimSiam transfers on par with supervised pre-training (Δ >= -1)",
              "paper Table 5 (SimSiam base: -0.7 to +4.6 AP vs ImageNet supervised)")]
    for a_role, b_role, text, source in pairs:
        absent = [r for r in (a_role, b_role) if not by_role[r]]
        if absent or not tasks:
            why = f"no {' or '.join(absent)} entry" if absent else "no transfer results"
            out.append(Claim(f"{text}: transfer", source, "not tested", why, "–"))
            continue
        for a_label in by_role[a_role]:
            for b_label in by_role[b_role][:1]:
                for task in tasks:
                    for metric in ("AP50", "AP"):
                        if b_role != "scratch":
                            thr = THRESHOLDS["simsiam_vs_supervised"]
                        else:
                            thr = THRESHOLDS["transfer_vs_scratch_" + ("ap50" if metric == "AP50" else "ap")]
                        out.append(_with_resumed(res, task, (a_label, b_label), _compare(
                            f"{text}: {task} {metric}", source, a_label, _ap(res, a_label, task, "bbox", metric),
                            b_label, _ap(res, b_label, task, "bbox", metric), thr, f"{task} {metric}")))
    return out


def _with_resumed(res: RunResults, task: str, labels: Sequence[str], claim: Claim) -> Claim:
    """Name the resumed trials behind a transfer claim (their data order and RNG were not restored)."""
    resumed = [t for t in res.transfer if t.task == task and t.label in labels and t.resumed]
    if resumed:
        names = ", ".join(f"{t.label} trial {t.trial if t.trial is not None else '?'}" for t in resumed)
        claim.evidence += f"; RESUMED trials: {names} (data order and RNG not restored)"
        claim.values["resumed_trials"] = len(resumed)
    return claim


def _reproduction(res: RunResults, roles: dict[str, str]) -> list[Claim]:
    """Real data: our rows against the paper's Table 5 / Table 4 within the tolerance."""
    tol, out = THRESHOLDS["reproduction_tol"], []
    tasks = {t.task for t in res.transfer if not is_synthetic_task(t.task)}
    for label, role in roles.items():
        paper_label = _PAPER_ROW.get(role)
        if paper_label is None:
            continue
        for (task, rtype) in reference.PAPER_TASKS:
            if task not in tasks:
                continue
            for metric in ("AP50", "AP") if role == "simsiam" else ("AP",):
                vals = _ap(res, label, task, rtype, metric)
                if not vals:
                    continue
                paper = reference.TABLE5_TRANSFER[paper_label][task, rtype][metric]
                out.append(_near(f"reproduces Table 5 '{paper_label}': {task} {rtype} {metric} within {tol:.1f} "
                                 "(paper: 200-ep pre-training)",
                                 label, vals, paper))
        if role == "simsiam":
            for ep, paper in reference.TABLE4_LINEAR_TOP1["SimSiam"].items():
                vals = [e.top1 for e in res.evals if e.label == label and e.protocol == "lincls" and not e.synthetic
                        and e.pretrain_epochs == ep and math.isfinite(e.top1)]
                if vals:
                    out.append(_near(f"reproduces Table 4 SimSiam {ep} ep linear top-1 within {tol:.1f}",
                                     label, vals, paper))
    return out


def _near(claim: str, label: str, vals: list[float], paper: float) -> Claim:
    tol = THRESHOLDS["reproduction_tol"]
    diff = statistics.fmean(vals) - paper
    r = one_sample(vals, paper)
    test = _test_text(r, len(vals), None) if r is None else (
        f"one-sample t vs the paper: two-sided p = {r.p_two_sided:.3g}; Δ 95% CI [{r.ci[0]:+.1f}, {r.ci[1]:+.1f}]; "
        f"n={len(vals)}")
    return Claim(claim, f"{reference.CITATION.split(',')[0]} (paper value {paper:.1f})",
                 "holds" if abs(diff) <= tol else "fails", f"{label} {_fmt(vals)} vs paper {paper:.1f}: Δ {diff:+.1f}",
                 test, {"label": label, "diff": diff, "paper": paper, "n": len(vals),
                        "p": None if r is None else r.p_two_sided})


def build_verdict(res: RunResults) -> list[Claim]:
    """Every claim the runs under ``res.root`` can test (and the untestable ones, marked so)."""
    roles, dirs = _roles(res)
    synthetic = bool(res.state.get("synthetic")) if "synthetic" in res.state else (
        any(e.synthetic for e in res.evals) or any(is_synthetic_task(t.task) for t in res.transfer))
    claims = _collapse(res, roles, dirs)
    sims = [lb for lb, r in roles.items() if r == "simsiam"] or ["SimSiam"]
    rands = [lb for lb, r in roles.items() if r == "random_init"] or ["random init"]
    for sim in sims:
        claims += _eval_claims(res, sim, rands[0])
    claims += _transfer_claims(res, roles, synthetic)
    if synthetic:
        for sup in [lb for lb, r in roles.items() if r == "supervised"]:
            acc = _top1(res, sup, "lincls")
            if acc:
                mean = statistics.fmean(acc)
                claims.append(Claim(f"supervised linear top-1 >= {THRESHOLDS['supervised_linear_min']:.0f} % "
                                    "(the synthetic labels are learnable)", "the demo's target",
                                    "holds" if mean >= THRESHOLDS["supervised_linear_min"] else "fails",
                                    f"{sup} {_fmt(acc)}", "n=1: no test" if len(acc) < 2 else "–",
                                    {"mean": mean}))
        claims += budget_claims(res)
    else:
        claims += _reproduction(res, roles)
    return claims

