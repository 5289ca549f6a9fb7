"""The retraining gate: is a candidate version better than the active one on recent data?

Both versions are replayed (:func:`worker.stream.backtest.replay`) over the same held-out
recent records; :func:`judge` compares the two :class:`~worker.stream.backtest.Replay` s and
returns a :class:`GateDecision` holding every check with its measured value, its limit and
whether it passed. The candidate passes when all checks pass:

1. **enough data**: each version scored at least ``min_windows`` recent windows, and as many
   normal-looking ones (else "not enough data": nothing is judged).
2. **anomaly rate**: on the recent windows that look normal (outside the active's incidents),
   the candidate flags no more than ``reference * (1 + rate_tolerance)`` plus
   ``rate_slack_windows`` windows, where the reference is the larger of the active's rate on
   them and the active's expected rate (its threshold's target, e.g. 1 %). A model that
   flags too much (a threshold too low) fails here.
3. **incident agreement**: the candidate opens an incident overlapping (same series,
   overlapping time) at least ``min_incident_share`` of the active's incidents. A model that
   flags nothing fails here whenever the active saw something.
4. **threshold calibration**: the candidate's threshold flags about the share of its own
   training windows that its rule states (``fpr`` 0.01: 1 %), within a factor
   ``calibration_factor`` (:class:`Calibration`). A threshold moved by hand, or one that no
   training window reaches, fails here whatever the recent data holds (the only check that
   still guards against a model that flags nothing when the active is stale).

When the active model is **stale** (it flags more than ``stale_factor`` times its expected rate
plus the slack in every one of ``stale_segments`` consecutive stretches of the recent windows:
the data no longer looks like its training data, what ``seq2gmm models drift`` reports), its
incidents are no evidence: the normal-looking windows are all recent windows, the reference is
the expected rate alone, and the incident check is waived with that reason. Drift persists;
anomalies come in episodes: an active model flagging many windows in some stretches only is
not stale (on the KPI series, bench/retrain_kpi.py, a candidate flagging nothing was promoted
over an active whose 10-21 % flags were mostly labelled anomalies while staleness was judged
on the whole holdout's rate), so its incidents must still be opened by the candidate.
Transport-free.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

from model.thresholds import EnergyQuantiles, Threshold, expected_alarm_rate
from worker.errors import ConfigError
from worker.stream.backtest import BacktestWindow, Replay

Span = tuple[str, float, float]  # (series id, first window start, last window end)


@dataclass(frozen=True)
class GateRules:
    min_windows: int = 20
    rate_tolerance: float = 0.5
    rate_slack_windows: int = 2
    min_incident_share: float = 0.8
    stale_factor: float = 5.0
    stale_segments: int = 4
    calibration_factor: float = 3.0

    def __post_init__(self) -> None:
        valid = (
            self.min_windows >= 1
            and self.rate_tolerance >= 0
            and self.rate_slack_windows >= 0
            and 0 <= self.min_incident_share <= 1
            and self.stale_factor > 1
            and self.stale_segments >= 1
            and self.calibration_factor > 1
        )
        if not valid:
            raise ConfigError(
                f"invalid gate rules {self}: min_windows >= 1, rate_tolerance >= 0,"
                " rate_slack_windows >= 0, 0 <= min_incident_share <= 1, stale_factor > 1,"
                " stale_segments >= 1, calibration_factor > 1 (the --flags of seq2gmm retrain,"
                " or SEQ2GMM_RETRAIN__*)"
            )

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> GateRules:
        """From ``settings.retrain`` (SEQ2GMM_RETRAIN__*), with the non-None ``overrides``."""
        r = settings.retrain
        rules = cls(
            r.min_windows, r.rate_tolerance, r.rate_slack_windows, r.min_incident_share,
            r.stale_factor, r.stale_segments, r.calibration_factor,
        )  # fmt: skip
        return replace(rules, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Calibration:
    """What a version's threshold flags of its own training windows (``implied_rate``, read
    from its energy quantiles) against what its rule states (``stated_rate``: the ``fpr``
    target or ``1 - quantile``; None for an ``f1`` threshold, which states no rate)."""

    method: str
    stated_rate: float | None
    implied_rate: float
    n_training: int

    @classmethod
    def of(cls, threshold: Threshold, quantiles: EnergyQuantiles | None) -> Calibration | None:
        """None without training quantiles (nothing to compare the threshold with)."""
        if quantiles is None:
            return None
        stated = None if threshold.method == "f1" else expected_alarm_rate(threshold, None)
        implied = 1.0 - quantiles.percentile(threshold.value) / 100.0
        return cls(threshold.method, stated, implied, quantiles.n_reference)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    limit: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "limit": self.limit,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class GateDecision:
    checks: list[Check]
    active_stale: bool = False
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reason(self) -> str:
        """The failed checks' details, or that all passed."""
        failed = [c.detail for c in self.checks if not c.passed]
        return "; ".join(failed) if failed else "every check passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "active_stale": self.active_stale,
            "checks": [c.to_dict() for c in self.checks],
            **self.facts,
        }


def only_series(result: Replay, pattern: str) -> Replay:
    """``result`` restricted to the series ids matching the glob ``pattern``."""
    if pattern == "*":
        return result
    return replace(
        result,
        windows=[w for w in result.windows if fnmatch.fnmatchcase(w.series_id, pattern)],
        incidents=[i for i in result.incidents if fnmatch.fnmatchcase(i.series_id, pattern)],
    )


def incident_spans(result: Replay) -> list[Span]:
    """Each incident that would open, as (series, start of its first window, end of its last),
    in its latest state."""
    latest = {r.id: r for r in result.incidents}
    return [(r.series_id, r.first_window.start, r.last_window.end) for r in latest.values()]


def _inside(w: BacktestWindow, spans: Iterable[Span]) -> bool:
    return any(w.series_id == s and w.start <= end and w.end >= start for s, start, end in spans)


def _rate(windows: list[BacktestWindow]) -> float:
    return sum(w.anomalous for w in windows) / len(windows) if windows else 0.0


def judge(
    active: Replay,
    candidate: Replay,
    rules: GateRules,
    expected_rate: float | None,
    calibration: Calibration | None = None,
) -> GateDecision:
    """Every check of the gate on two replays of the same recent records; ``expected_rate`` is
    the active's (``model.thresholds.expected_alarm_rate``; None when unknown: no staleness
    verdict and the active's measured rate is the reference); ``calibration`` the
    candidate's (None: that check passes, saying there is nothing to compare)."""
    n = min(len(active.windows), len(candidate.windows))
    facts: dict[str, Any] = {
        "windows": {"active": len(active.windows), "candidate": len(candidate.windows)},
        "flagged": {"active": len(active.flagged), "candidate": len(candidate.flagged)},
        "expected_rate": expected_rate,
    }
    if n < rules.min_windows:
        detail = (
            f"not enough data: {n} recent windows scored, the gate needs {rules.min_windows}"
            " (lengthen --holdout or lower SEQ2GMM_RETRAIN__MIN_WINDOWS)"
        )
        checks = [Check("enough_data", False, n, rules.min_windows, detail)]
        return GateDecision(checks, facts=facts)
    active_rate = _rate(active.windows)
    stale, facts["active_stretch_rates"] = stale_verdict(active, rules, expected_rate)
    spans = [] if stale else incident_spans(active)
    normal_a = [w for w in active.windows if not _inside(w, spans)]
    normal_c = [w for w in candidate.windows if not _inside(w, spans)]
    facts["active_rate"] = active_rate
    facts["normal_windows"] = {"active": len(normal_a), "candidate": len(normal_c)}
    m = min(len(normal_a), len(normal_c))
    if m < rules.min_windows:
        detail = (
            f"not enough data: {m} recent windows outside the active model's incidents, the"
            f" gate needs {rules.min_windows} (lengthen --holdout)"
        )
        checks = [Check("enough_data", False, m, rules.min_windows, detail)]
        return GateDecision(checks, active_stale=stale, facts=facts)
    checks = [Check("enough_data", True, m, rules.min_windows, f"{m} normal-looking windows")]
    checks.append(_rate_check(normal_a, normal_c, rules, expected_rate, stale))
    checks.append(_incident_check(active, candidate, rules, active_rate, expected_rate, stale))
    checks.append(_calibration_check(calibration, rules))
    return GateDecision(checks, active_stale=stale, facts=facts)


def stale_verdict(
    active: Replay, rules: GateRules, expected_rate: float | None
) -> tuple[bool, list[float]]:
    """(is the active model stale on these windows, its flagged share in each stretch): stale
    when it flags more than ``stale_factor`` x ``expected_rate`` plus the slack in every one
    of ``stale_segments`` consecutive stretches (never without an expected rate)."""
    stretches = _stretch_rates(active.windows, rules.stale_segments)
    stale = expected_rate is not None and all(
        rate > rules.stale_factor * expected_rate + rules.rate_slack_windows / size
        for size, rate in stretches
    )
    return stale, [rate for _, rate in stretches]


def _stretch_rates(windows: list[BacktestWindow], n: int) -> list[tuple[int, float]]:
    """(windows, flagged share) of each of ``n`` consecutive stretches of ``windows`` in time."""
    ordered = sorted(windows, key=lambda w: w.start)
    n = max(1, min(n, len(ordered)))
    bounds = [round(i * len(ordered) / n) for i in range(n + 1)]
    parts = [ordered[a:b] for a, b in pairwise(bounds)]
    return [(len(p), _rate(p)) for p in parts]


def _rate_check(
    normal_a: list[BacktestWindow],
    normal_c: list[BacktestWindow],
    rules: GateRules,
    expected_rate: float | None,
    stale: bool,
) -> Check:
    active_rate = _rate(normal_a)
    expected = expected_rate or 0.0
    reference = expected if stale else max(active_rate, expected)
    limit = reference * (1 + rules.rate_tolerance) + rules.rate_slack_windows / len(normal_c)
    value = _rate(normal_c)
    basis = (
        f"the expected {100 * expected:.2f}% (the active model is stale)"
        if stale
        else f"max(active {100 * active_rate:.2f}%, expected {100 * expected:.2f}%)"
    )
    verdict = "within" if value <= limit else "above"
    detail = (
        f"candidate flags {100 * value:.2f}% of {len(normal_c)} normal-looking recent windows,"
        f" {verdict} the limit {100 * limit:.2f}% ({basis} x {1 + rules.rate_tolerance:g}"
        f" + {rules.rate_slack_windows} windows)"
    )
    return Check("anomaly_rate", value <= limit, value, limit, detail)


def _incident_check(
    active: Replay,
    candidate: Replay,
    rules: GateRules,
    active_rate: float,
    expected_rate: float | None,
    stale: bool,
) -> Check:
    if stale:
        assert expected_rate is not None
        detail = (
            f"waived: the active model is stale (it flags {100 * active_rate:.1f}% of recent"
            f" windows, in every stretch of them, expected {100 * expected_rate:.2f}%), its"
            " incidents are no reference"
        )
        return Check("incident_agreement", True, None, rules.min_incident_share, detail)
    spans = incident_spans(active)
    if not spans:
        detail = "the active model opened no incident on the recent data: nothing to agree on"
        return Check("incident_agreement", True, None, rules.min_incident_share, detail)
    theirs = incident_spans(candidate)
    matched = sum(1 for s, a, b in spans if any(t == s and c <= b and d >= a for t, c, d in theirs))
    share = matched / len(spans)
    passed = share >= rules.min_incident_share
    detail = (
        f"candidate also opens {matched} of the active model's {len(spans)} incidents"
        f" ({100 * share:.0f}%, {'at least' if passed else 'below'} the required"
        f" {100 * rules.min_incident_share:.0f}%)"
    )
    return Check("incident_agreement", passed, share, rules.min_incident_share, detail)


def _calibration_check(c: Calibration | None, rules: GateRules) -> Check:
    """The candidate's threshold flags its stated share of its own training windows, within
    ``calibration_factor`` either way (no lower bound when its training windows are too few
    for the stated rate to show: fewer than ``1 / stated``)."""
    if c is None or c.stated_rate is None:
        why = "no training quantiles" if c is None else f"an {c.method} threshold states no rate"
        return Check("threshold_calibration", True, None, None, f"not checked: {why}")
    f, stated = rules.calibration_factor, c.stated_rate
    low = stated / f if c.n_training * stated >= 1 else 0.0
    high = min(1.0, stated * f + 1.0 / c.n_training)
    passed = low <= c.implied_rate <= high
    limit = high if c.implied_rate > high else low
    detail = (
        f"candidate's threshold flags {100 * c.implied_rate:.2f}% of its {c.n_training} training"
        f" windows where its {c.method} rule states {100 * stated:.2f}%"
        f" ({'within' if passed else 'outside'} {100 * low:.2f}%..{100 * high:.2f}%)"
    )
    if not passed:
        detail += ": its threshold was not inferred from its own scores (set by hand?)"
    return Check("threshold_calibration", passed, c.implied_rate, limit, detail)
