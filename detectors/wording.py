"""Sentences a human can act on, with the numbers.

>>> duration(90), duration(180), duration(3900)
('90 seconds', 'three minutes', '1 hour 5 minutes')
>>> value("error_rate", 0.005), value("latency_p95", 0.25), value("latency_p95", 1.5), value("health", 0.6)
('0.5%', '250 ms', '1.5 s', '60%')
>>> change("error_rate", 0.005, 0.05, "up")
'Error rate went from 0.5% to 5% (10x)'
>>> change("health", 1.0, 0.6, "down")
'Health fell from 100% to 60%'
"""

from __future__ import annotations

LABELS = {"error_rate": "Error rate", "latency_p95": "p95 latency", "health": "Health",
          "requests": "Traffic"}
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def label(metric: str) -> str:
    return LABELS.get(metric, metric.replace("_", " ").capitalize())


def value(metric: str, x: float) -> str:
    """A metric value in the unit people read it in."""
    if metric in ("error_rate", "health"):
        pct = 100 * x
        return f"{pct:.2g}%" if pct < 10 else f"{pct:.0f}%"
    if metric.startswith("latency"):
        return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2g} s"
    return f"{x:.3g}"


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} second{'s' if s != 1 else ''}"
    minutes = round(s / 60)
    if minutes < 60:
        return f"{WORDS[minutes] if minutes <= 10 else minutes} minutes"
    hours, rest = divmod(minutes, 60)
    text = f"{hours} hour{'s' if hours > 1 else ''}"
    return text + (f" {rest} minute{'s' if rest > 1 else ''}" if rest else "")


def times(factor: float) -> str:
    return f"{factor:.0f}x" if factor >= 10 else f"{factor:.1f}x".replace(".0x", "x")


def change(metric: str, baseline: float, current: float, direction: str | None) -> str:
    """'Error rate went from 0.5% to 5% (10x)'."""
    text = f"{label(metric)} {'fell' if current < baseline else 'went'} from {value(metric, baseline)} to {value(metric, current)}"
    if direction != "down" and baseline > 0 and current > baseline:
        text += f" ({times(current / baseline)})"
    return text


def rollback(what: str, lag_s: float, version: str, service: str, target: str) -> str:
    return (f"{what} {duration(lag_s)} after the deployment of {version} to {service}. "
            f"Rolling back to {target}.")


def upgrade(what: str, lag_s: float, version: str, service: str, target: str, asked_s: float) -> str:
    return (f"{what} {duration(lag_s)} after the deployment of {version} to {service}: now clear-cut. "
            f"Rolling back to {target} without waiting for the approval asked {duration(asked_s)} ago.")


def approval(what: str, version: str, service: str, ago_s: float, lag_s: float, target: str,
             doubts: tuple[str, ...]) -> str:
    why = f" Not clear-cut: {'; '.join(doubts)}." if doubts else ""
    return (f"{what} after the deployment of {version} to {service} {duration(ago_s)} ago "
            f"(the shift began {duration(lag_s)} after it).{why} "
            f"I recommend rolling back to {target}. Should I proceed?")
