"""The zoo's quality, as tables: each shipped SAE's recorded metrics, per kind of text, and
against the bar every shipped SAE is held to (:data:`ZOO_BAR`).

What ``python -m interp_lib zoo`` prints and the zoo's README shows; the records are the
``metrics.json`` files that ``python -m interp_lib train-zoo`` writes beside each SAE.
"""

from __future__ import annotations

from interp_lib import data
from interp_lib.errors import DamagedFileError
from interp_lib.sae.zoo import METRICS_REMEDY, list_saes, recorded_metrics, sae_path


def _markdown(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A Markdown table (or tab-separated lines) of ``head`` and ``rows``."""
    if not markdown:
        return "\n".join("\t".join(row) for row in [head, *rows])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(out + ["| " + " | ".join(row) + " |" for row in rows])


def zoo_kinds_table(metric: str = "ce_recovered", markdown: bool = True) -> str:
    """One held-out ``metric`` of every shipped SAE on each kind of the evaluation set (from the
    ``by_kind`` field of each metrics.json); empty if no record has it."""
    rows = []
    for release, sae_id in list_saes(pretrained=False):
        by_kind = recorded_metrics(release, sae_id).get("by_kind")
        if not by_kind:
            continue
        try:
            rows.append([release, sae_id] + [f"{by_kind[k][metric]:.3f}" for k in data.EVAL_KINDS])
        except (KeyError, TypeError, ValueError) as exc:
            raise DamagedFileError(
                sae_path(release, sae_id) / "metrics.json",
                f"has a by_kind field without {metric!r} for every kind ({exc!r})",
                METRICS_REMEDY,
            ) from None
    if not rows:
        return ""
    kinds = [data.KIND_NAMES[k] for k in data.EVAL_KINDS]
    return _markdown(["release", "sae_id", *kinds], rows, markdown)


def zoo_table(markdown: bool = True) -> str:
    """The zoo's held-out quality table (from each SAE's metrics.json)."""
    head = [
        "release",
        "sae_id",
        "L0",
        "FVE",
        "FVE typical",
        "CE recovered",
        "loss increase (nats)",
        "KL (nats)",
        "dead",
        "dense",
    ]
    lines = []
    for release, sae_id in list_saes(pretrained=False):
        m = recorded_metrics(release, sae_id)
        if not m:
            continue
        try:
            row = [
                release,
                sae_id,
                f"{m['l0']:.1f}",
                f"{m['fve']:.3f}",
                f"{m['fve_typical']:.3f}" if "fve_typical" in m else "-",
                f"{m['ce_recovered']:.3f}",
                f"{m['ce_increase']:.3f}",
                f"{m['kl_div']:.3f}" if "kl_div" in m else "-",
                f"{m['dead_fraction']:.1%}",
                f"{m['dense_fraction']:.1%}",
            ]
        except KeyError as exc:
            raise DamagedFileError(
                sae_path(release, sae_id) / "metrics.json",
                f"lacks the field {exc.args[0]!r}",
                METRICS_REMEDY,
            ) from None
        except (TypeError, ValueError) as exc:
            raise DamagedFileError(
                sae_path(release, sae_id) / "metrics.json",
                f"holds a value that is not a number ({exc})",
                METRICS_REMEDY,
            ) from None
        lines.append(row)
    return _markdown(head, lines, markdown)


ZOO_BAR: dict[str, tuple[str, float]] = {
    "fve_typical": (">=", 0.85),
    "fve": (">=", 0.90),
    "ce_recovered": (">=", 0.97),
    "kl_div": ("<=", 0.1),
    "l0": ("<=", 64),
    "dead_fraction": ("<=", 0.05),
}
"""The bar a shipped SAE is held to: {field: (comparison, value)}, on the corpus's
held-out split and on every kind of the evaluation set (dead fraction: held-out split only)."""

_BAR_NAMES = {
    "fve_typical": "FVE typical",
    "fve": "FVE",
    "ce_recovered": "CE recovered",
    "kl_div": "KL (nats)",
    "l0": "L0",
    "dead_fraction": "dead",
}


def bar_shortfalls(metrics: dict) -> dict[str, tuple[float, str, bool]]:
    """Against :data:`ZOO_BAR`, one SAE's record (a metrics.json dict): {field: (worst value,
    where: "held-out" or a kind, meets)} over the held-out split and each kind in ``by_kind``."""
    out = {}
    for field, (op, limit) in ZOO_BAR.items():
        seen = [("held-out", float(metrics[field]))]
        if field != "dead_fraction":
            seen += [(k, float(v[field])) for k, v in metrics.get("by_kind", {}).items()]
        worst = (min if op == ">=" else max)(seen, key=lambda kv: kv[1])
        meets = worst[1] >= limit if op == ">=" else worst[1] <= limit
        out[field] = (worst[1], worst[0], meets)
    return out


def zoo_bar_table(markdown: bool = True) -> str:
    """Each shipped SAE against :data:`ZOO_BAR`: the worst value of each field over the held-out
    split and the evaluation set's kinds, where it falls, and how many of the fields meet the
    bar (a missed one in bold), there and on the held-out split alone."""
    head = ["sae_id"] + [
        f"{_BAR_NAMES[f]} {op} {v:.0%}" if f == "dead_fraction" else f"{_BAR_NAMES[f]} {op} {v:g}"
        for f, (op, v) in ZOO_BAR.items()
    ]
    rows = []
    for release, sae_id in list_saes(pretrained=False):
        m = recorded_metrics(release, sae_id)
        if not m:
            continue
        try:
            report = bar_shortfalls(m)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DamagedFileError(
                sae_path(release, sae_id) / "metrics.json",
                f"lacks a field the bar needs or holds one that is not a number ({exc!r})",
                METRICS_REMEDY,
            ) from None
        cells = []
        for field, (value, where, meets) in report.items():
            shown = {"dead_fraction": f"{value:.1%}", "l0": f"{value:.1f}"}.get(
                field, f"{value:.3f}"
            )
            where = data.KIND_NAMES.get(where, where)
            cells.append(f"{shown} ({where})" if meets else f"**{shown}** ({where})")
        met = sum(meets for _, _, meets in report.values())
        alone = sum(meets for _, _, meets in bar_shortfalls({**m, "by_kind": {}}).values())
        rows.append([sae_id, *cells, f"{met} of {len(report)}", f"{alone} of {len(report)}"])
    return _markdown([*head, "met", "met on held-out text"], rows, markdown) if rows else ""
