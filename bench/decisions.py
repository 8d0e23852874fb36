"""Score decisions on simulated, labelled scenarios: Backout against Argo- and Flagger-like analyses.

    .venv/bin/python bench/decisions.py --json          # the figures, as JSON on stdout
    .venv/bin/python bench/decisions.py --seeds 4       # a quicker table

Each seed is a ``backout simulate`` scenario (4 h, 8 services, 10 s
sampling, every event kind in turn): world 1, the data the defaults were
chosen on. ``world2`` in the output scores the same deciders on
``bench/world2.py``, an independent generator (its own noise models and
events; ``sim`` at 10-15 s, ``slow`` at 30 s, ``testbed`` cases at 1 min
with rates without counts): the figures that count (DETECTION.md,
"Generalization"). Backout's decisions come from exactly the
backtest code (:func:`streams.backtest.replay`); the references see the same
records in the same order. Per decider:

* ``recall_clear`` / ``recall_ambiguous``: bad deploys (incidents: a bug
  shipped by two deploys in quick succession is one) that got a ``rollback``
  or ``request_approval`` naming one of their deploys;
* ``auto_rollback_clear``: clear ones rolled back without asking;
* ``false_rollbacks`` / ``false_approvals``: decisions naming a deploy that
  shipped no bug, out of ``good_deploys``;
* ``delay_clear_s`` / ``delay_all_s``: median and p90 event seconds from the
  labelled onset to the first decision, for caught clear (all) bad deploys;
  world 2's ``delay_clear_by_step_s``: the same per sampling interval (sim
  scenarios sample every 10, 12 or 15 s; the target is set at 10 s);
* ``wrong_targets``: rollbacks or requests whose target is not a version that
  ran long and clean before the bad deploy (world 2: not *the* version it
  replaced, unless that one was bad or new);
* ``false_question_rate``: good deploys that got a ``request_approval``, over
  ``good_deploys``; ``precision``: caught bad incidents over caught bad
  incidents plus good deploys that got a rollback or a question;
  ``false_by_kind``: those good deploys by kind.
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.contracts import Decision, Deploy, Metric, encode  # noqa: E402
from backout.errors import SampleRejected  # noqa: E402
from backout.settings import load_config  # noqa: E402
from bench import world2  # noqa: E402
from bench.reference import THRESHOLDS, ThresholdAnalysis, argo_like, flagger_like  # noqa: E402
from streams.backtest import replay  # noqa: E402
from streams.simulate import EVENTS, scenario  # noqa: E402


def run_backout(records: list[Metric | Deploy], config_path: str | None) -> tuple[list[Decision], int]:
    bad = []
    lines = (encode(r) for r in records)
    out = [o for o in replay(lines, load_config(config_path), lambda n, why: bad.append(n))
           if isinstance(o, Decision)]
    return out, len(bad)


def run_reference(make: Any, records: list[Metric | Deploy]) -> list[Decision]:
    decider = make()
    seen: set[tuple[str, str, float]] = set()
    last: dict[tuple[str, str], float] = {}
    out: list[Decision] = []
    for r in records:
        if isinstance(r, Metric):  # the same hygiene as Backout: drop duplicates and late samples
            key = (r.service, r.metric)
            if (r.service, r.metric, r.ts) in seen or r.ts < last.get(key, 0.0):
                continue
            seen.add((r.service, r.metric, r.ts))
            last[key] = r.ts
        try:
            out += decider.feed(r)
        except SampleRejected:
            continue
    return out + decider.finish()


def score(decisions: list[Decision], labels: dict[str, Any]) -> dict[str, Any]:
    deploys = {d["deploy_id"]: d for d in labels["deploys"]}
    incidents: dict[str, list[dict[str, Any]]] = {}
    for d in labels["deploys"]:
        if d["label"] == "bad":
            incidents.setdefault(d["incident"], []).append(d)
    bad_ids = {d["deploy_id"] for group in incidents.values() for d in group}
    rows = []
    for inc, group in incidents.items():
        ids = {d["deploy_id"] for d in group}
        first = min(group, key=lambda d: d["ts"])
        mine = sorted((x for x in decisions if x.deploy_id in ids), key=lambda x: x.ts)
        acted = [x for x in mine if x.action in ("rollback", "request_approval")]
        onset = min(d["onset_ts"] for d in group)
        rows.append({
            "incident": inc, "kind": first["kind"], "clarity": first["clarity"],
            "caught": bool(acted), "rolled_back": any(x.action == "rollback" for x in acted),
            "escalated": any(x.action == "escalate" for x in mine),
            "delay_s": round(acted[0].ts - onset, 1) if acted else None,
            "wrong_target": sum(x.to_version not in first["acceptable_targets"] for x in acted),
        })
    good = [d for d in labels["deploys"] if d["label"] == "good" and not d["rollback"]]
    false = [x for x in decisions if x.deploy_id not in bad_ids]
    return {"rows": rows, "good_deploys": len(good),
            "false_rollbacks": [_brief(x, deploys) for x in false if x.action == "rollback"],
            "false_approvals": [_brief(x, deploys) for x in false if x.action == "request_approval"],
            "escalations": sum(x.action == "escalate" for x in decisions)}


def _brief(x: Decision, deploys: dict[str, Any]) -> dict[str, Any]:
    label = deploys.get(x.deploy_id or "", {})
    return {"deploy_id": x.deploy_id, "kind": label.get("kind"), "action": x.action, "reason": x.reason}


def summarise(parts: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r for p in parts for r in p["rows"]]
    clear = [r for r in rows if r["clarity"] == "clear"]
    ambiguous = [r for r in rows if r["clarity"] == "ambiguous"]

    def rate(xs: list[dict[str, Any]], key: str) -> float | None:
        return round(sum(bool(r[key]) for r in xs) / len(xs), 3) if xs else None

    def quantiles(xs: list[dict[str, Any]]) -> dict[str, float | None]:
        d = [r["delay_s"] for r in xs if r["delay_s"] is not None]
        if not d:
            return {"median": None, "p90": None, "n": 0}
        return {"median": round(float(np.median(d)), 1), "p90": round(float(np.percentile(d, 90)), 1), "n": len(d)}

    by_kind: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = by_kind.setdefault(r["kind"], {"n": 0, "caught": 0, "rolled_back": 0, "delays_s": []})
        k["n"] += 1
        k["caught"] += r["caught"]
        k["rolled_back"] += r["rolled_back"]
        if r["delay_s"] is not None:
            k["delays_s"].append(r["delay_s"])
    false_rb = [x for p in parts for x in p["false_rollbacks"]]
    false_ap = [x for p in parts for x in p["false_approvals"]]
    good = sum(p["good_deploys"] for p in parts)
    paged = {(i, x["deploy_id"]): x["kind"] for i, p in enumerate(parts)
             for x in p["false_rollbacks"] + p["false_approvals"]}
    asked = {(i, x["deploy_id"]) for i, p in enumerate(parts) for x in p["false_approvals"]}
    caught = sum(r["caught"] for r in rows)
    false_by_kind: dict[str, int] = {}
    for kind in paged.values():
        false_by_kind[str(kind)] = false_by_kind.get(str(kind), 0) + 1
    return {
        "bad_clear": len(clear), "bad_ambiguous": len(ambiguous), "good_deploys": good,
        "recall_clear": rate(clear, "caught"), "recall_ambiguous": rate(ambiguous, "caught"),
        "auto_rollback_clear": rate(clear, "rolled_back"),
        "false_rollbacks": len(false_rb), "false_approvals": len(false_ap),
        "escalations": sum(p["escalations"] for p in parts),
        "delay_clear_s": quantiles(clear), "delay_all_s": quantiles(rows),
        "delay_clear_by_step_s": {f"{step:g}": quantiles([r for r in clear if r.get("step_s") == step])
                                  for step in sorted({r["step_s"] for r in clear if "step_s" in r})},
        "wrong_targets": sum(r["wrong_target"] for r in rows),
        "by_kind": {k: {**v, "delays_s": sorted(v["delays_s"])} for k, v in sorted(by_kind.items())},
        "false_rollback_cases": false_rb[:10], "false_approval_cases": false_ap[:10],
        "false_question_rate": round(len(asked) / good, 3) if good else None,
        "precision": round(caught / (caught + len(paged)), 3) if caught + len(paged) else None,
        "false_by_kind": dict(sorted(false_by_kind.items())),
    }


def world2_part(mode: str, seeds: int, config_path: str | None, first: int = 1) -> dict[str, Any]:
    """Score the deciders on ``seeds`` world-2 scenarios of one mode (seeds first..first+N-1)."""
    parts: dict[str, list[dict[str, Any]]] = {"backout": [], "argo_like": [], "flagger_like": []}
    for seed in range(first, first + seeds):
        records, labels = world2.scenario(seed, mode)
        scale = 1000.0 if labels["latency_unit"] == "ms" else 1.0
        thresholds = {**THRESHOLDS, "latency_p95": ("max", THRESHOLDS["latency_p95"][1] * scale)}
        parts["backout"].append(score(run_backout(records, config_path)[0], labels))
        for name, failures in (("argo_like", 3), ("flagger_like", 5)):
            make = partial(ThresholdAnalysis, name.replace("_", "-"), failures, thresholds=thresholds)
            parts[name].append(score(run_reference(make, records), labels))
        for part in parts.values():
            for row in part[-1]["rows"]:
                row["step_s"] = labels["step_s"]
    return {"scenarios": seeds, "first_seed": first, **{k: summarise(v) for k, v in parts.items()}}


@click.command()
@click.option("--seeds", default=8, show_default=True, type=click.IntRange(1, 1000),
              help="Number of simulated scenarios (seeds 1..N).")
@click.option("--hours", default=4.0, show_default=True, type=click.FloatRange(min=1), help="Length of each scenario.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Backout policy YAML (default: built-in defaults).")
@click.option("--world2-seeds", "w2_seeds", default=12, show_default=True, type=click.IntRange(0, 1000),
              help="World-2 scenarios per mode (sim, slow: a third of it; testbed: twice it). 0: world 1 only.")
@click.option("--world2-first-seed", "w2_first", default=1, show_default=True, type=click.IntRange(1),
              help="First world-2 seed (seeds already looked at while developing can be left out).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON on stdout.")
def main(seeds: int, hours: float, config_path: str | None, w2_seeds: int, w2_first: int, as_json: bool) -> None:
    """Score Backout, an Argo-Rollouts-like and a Flagger-like decider on the same simulated set."""
    kinds = list(EVENTS)
    parts: dict[str, list[dict[str, Any]]] = {"backout": [], "argo_like": [], "flagger_like": []}
    timing = {"backout_s": 0.0, "records": 0, "bad_lines": 0}
    for seed in range(1, seeds + 1):
        order = kinds[(seed * 5) % len(kinds):] + kinds[:(seed * 5) % len(kinds)]
        records, labels = scenario(seed, kinds=order, hours=hours)
        started = time.perf_counter()
        decisions, bad_lines = run_backout(records, config_path)
        timing["backout_s"] += time.perf_counter() - started
        timing["records"] += len(records)
        timing["bad_lines"] += bad_lines
        parts["backout"].append(score(decisions, labels))
        parts["argo_like"].append(score(run_reference(argo_like, records), labels))
        parts["flagger_like"].append(score(run_reference(flagger_like, records), labels))
    result: dict[str, Any] = {"seeds": seeds, "hours": hours, "services": 8, "step_s": 10.0,
                              **{k: summarise(v) for k, v in parts.items()}}
    result["timing"] = {**timing, "backout_s": round(timing["backout_s"], 2),
                        "backout_s_per_scenario": round(timing["backout_s"] / seeds, 2)}
    b, a = result["backout"]["delay_clear_s"]["median"], result["argo_like"]["delay_clear_s"]["median"]
    result["speedup_vs_argo_median_clear"] = round(a / b, 2) if a and b else None
    if w2_seeds:
        result["world2"] = {"sim": world2_part("sim", w2_seeds, config_path, w2_first),
                            "slow": world2_part("slow", max(1, w2_seeds // 3), config_path, w2_first),
                            "testbed": world2_part("testbed", 2 * w2_seeds, config_path, w2_first)}
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    keys = ["recall_clear", "recall_ambiguous", "auto_rollback_clear", "false_rollbacks", "false_approvals",
            "escalations", "wrong_targets"]
    click.echo(f"{'':24}" + "".join(f"{name:>16}" for name in parts))
    for key in keys:
        click.echo(f"{key:24}" + "".join(f"{result[n][key]!s:>16}" for n in parts))
    for key in ("delay_clear_s", "delay_all_s"):
        for q in ("median", "p90"):
            click.echo(f"{key + ' ' + q:24}" + "".join(f"{result[n][key][q]!s:>16}" for n in parts))
    b = result["backout"]
    click.echo(f"bad clear {b['bad_clear']}, ambiguous {b['bad_ambiguous']}, good deploys {b['good_deploys']}; "
               f"speed-up vs Argo-like (median, clear): {result['speedup_vs_argo_median_clear']}; "
               f"backtest {result['timing']['backout_s_per_scenario']} s per 4 h × 8 services")
    for kind, v in b["by_kind"].items():
        click.echo(f"  {kind:32} {v['caught']}/{v['n']} caught, {v['rolled_back']} rolled back, delays {v['delays_s']}")
    for case in b["false_rollback_cases"] + b["false_approval_cases"]:
        click.echo(f"  FALSE {case['action']} {case['deploy_id']} ({case['kind']}): {case['reason']}")
    keys += ["false_question_rate", "precision"]
    for mode, part in result.get("world2", {}).items():
        w = part["backout"]
        click.echo(f"world 2, {mode} ({part['scenarios']} scenarios: bad clear {w['bad_clear']}, "
                   f"ambiguous {w['bad_ambiguous']}, good deploys {w['good_deploys']})")
        for key in keys:
            click.echo(f"  {key:22}" + "".join(f"{part[n][key]!s:>16}" for n in parts))
        for q in ("median", "p90"):
            click.echo(f"  {'delay_clear_s ' + q:22}" + "".join(f"{part[n]['delay_clear_s'][q]!s:>16}"
                                                              for n in parts))
        click.echo(f"  false by kind: {w['false_by_kind']}")
        for kind, v in w["by_kind"].items():
            click.echo(f"  {kind:32} {v['caught']}/{v['n']} caught, {v['rolled_back']} rolled back, "
                       f"delays {v['delays_s']}")


if __name__ == "__main__":
    main()
