"""The run report: metrics next to their baselines, the figures, and the records that were skipped.

:func:`write_report` writes two files into the run directory:

* ``report.md``, for reading in a terminal or a repository browser (figures linked by relative path);
* ``report.html``, self-contained: figures embedded as base64 ``data:`` URIs, inline CSS, no scripts,
  no external references, so it can be mailed or archived as one file.

A metric is only meaningful against what it must beat, so every metric row shows each baseline
(majority class, chance, untrained towers, ...) and the difference to it.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from polymodal.data.record import BadRecord
from polymodal.errors import ConfigError

MAX_BAD_RECORDS_SHOWN = 1000  # the count is always exact; the listing stops here to keep the file small
Table = tuple[Mapping[str, Any], Mapping[str, Mapping[str, Any]]]  # (metrics, baselines)
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".svg": "image/svg+xml", ".webp": "image/webp"}


# ---------------------------------------------------------------- the metrics table


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not _is_number(value):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def _fmt_delta(value: Any, base: Any) -> str:
    if not (_is_number(value) and _is_number(base)):
        return "—"
    return f"{float(value) - float(base):+.4f}"


def _table_rows(metrics: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Header plus one row per metric: name, value, then (baseline, delta) for every baseline."""
    header = ["metric", "value"]
    for name in baselines:
        header += [name, f"Δ vs {name}"]
    rows = [header]
    for key, value in metrics.items():
        row = [key, _fmt(value)]
        for table in baselines.values():
            base = table.get(key)
            row += [_fmt(base), _fmt_delta(value, base) if base is not None else "—"]
        rows.append(row)
    return rows


def _check_tables(metrics: Any, baselines: Any) -> None:
    if not isinstance(metrics, Mapping):
        raise ConfigError(f"metrics: expected a dict of metric name -> value, got {type(metrics).__name__}")
    if not isinstance(baselines, Mapping) or not all(isinstance(t, Mapping) for t in baselines.values()):
        raise ConfigError("baselines: expected a dict of baseline name -> {metric name: value}")


def format_metrics_table(metrics: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]]) -> str:
    """The metrics with their baselines and differences as aligned plain text, for the terminal.

    Args:
        metrics: Metric name -> value of this run.
        baselines: Baseline name (e.g. ``"majority"``, ``"chance"``, ``"untrained"``) -> {metric name:
            value}; a baseline without a metric shows ``—``.

    Returns:
        The table, one line per metric plus a header and a rule, without a trailing newline.
    """
    _check_tables(metrics, baselines)
    rows = _table_rows(metrics, baselines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    # Names align left, numbers right so decimal points line up.
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(
    run_dir: Path,
    title: str,
    metrics: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, Any]],
    figures: Mapping[str, Path],
    bad_records: Sequence[BadRecord],
    notes: Sequence[str],
    created: str,
    sections: Mapping[str, Table] | None = None,
) -> str:
    out = [f"# {title}", "", f"_Written {created}._", ""]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    for heading, table in {"Metrics": (metrics, baselines), **(sections or {})}.items():
        out += [f"## {heading}", ""]
        rows = _table_rows(*table)
        if len(rows) > 1:
            out.append("| " + " | ".join(_md_escape(c) for c in rows[0]) + " |")
            out.append("|" + "|".join([":---"] + ["---:"] * (len(rows[0]) - 1)) + "|")
            out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows[1:]]
        else:
            out.append("No metrics recorded.")
        out.append("")
    if figures:
        out += ["## Figures", ""]
        for caption, path in figures.items():
            p = Path(path)
            if p.is_file():
                rel = os.path.relpath(p.resolve(), run_dir.resolve()).replace(os.sep, "/")
                out += [f"### {caption}", "", f"![{_md_escape(caption)}]({rel})", ""]
            else:
                out += [f"### {caption}", "", f"_Figure missing: {p}_", ""]
    out += [f"## Skipped records ({len(bad_records)})", ""]
    if bad_records:
        out += ["| file | position | problem |", "|:---|---:|:---|"]
        for b in bad_records[:MAX_BAD_RECORDS_SHOWN]:
            row = b.position or ""  # the manifest line a person looks for (Parquet: the row)
            out.append(f"| {_md_escape(b.source)} | {row} | {_md_escape(b.problem)} |")
        if len(bad_records) > MAX_BAD_RECORDS_SHOWN:
            out.append(f"\n… and {len(bad_records) - MAX_BAD_RECORDS_SHOWN} more.")
    else:
        out.append("None: every record was read.")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- html

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #1565c0; padding-bottom: .3rem; }
h2 { margin-top: 2rem; color: #1565c0; }
.meta { color: #666; font-size: .9rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; }
th { background: #f3f6fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, Menlo, monospace; }
td.pos { color: #2e7d32; } td.neg { color: #c62828; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-weight: 600; margin-bottom: .4rem; }
.missing { color: #c62828; }
"""


def _data_uri(path: Path) -> str | None:
    mime = _MIME.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return None
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _delta_class(metric: str, delta: str) -> str:
    """CSS class of a difference: green if better than the baseline, red if worse."""
    try:
        d = float(delta)
    except ValueError:
        return ""
    if d == 0 or math.isnan(d):
        return ""
    better = d < 0 if "loss" in metric else d > 0  # losses are the one kind where lower is better
    return " pos" if better else " neg"


def _html_table(rows: list[list[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in rows[0])
    body = []
    for r in rows[1:]:
        cells = [f"<td>{e(r[0])}</td>"]
        for n, c in enumerate(r[1:], start=1):
            extra = _delta_class(r[0], c) if rows[0][n].startswith("Δ") else ""
            cells.append(f'<td class="num{extra}">{e(c)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _html(
    title: str,
    metrics: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, Any]],
    figures: Mapping[str, Path],
    bad_records: Sequence[BadRecord],
    notes: Sequence[str],
    created: str,
    sections: Mapping[str, Table] | None = None,
) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">Written {e(created)}.</p>',
    ]
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{e(n)}</li>" for n in notes] + ["</ul>"]
    for heading, table in {"Metrics": (metrics, baselines), **(sections or {})}.items():
        parts.append(f"<h2>{e(heading)}</h2>")
        rows = _table_rows(*table)
        parts.append(_html_table(rows) if len(rows) > 1 else "<p>No metrics recorded.</p>")
    if figures:
        parts.append("<h2>Figures</h2>")
        for caption, path in figures.items():
            uri = _data_uri(Path(path))
            if uri is None:
                img = f'<p class="missing">Figure missing or not an image: {e(str(path))}</p>'
            else:
                img = f'<img src="{uri}" alt="{e(caption)}">'
            parts.append(f"<figure>\n<figcaption>{e(caption)}</figcaption>\n{img}\n</figure>")
    parts.append(f"<h2>Skipped records ({len(bad_records)})</h2>")
    if bad_records:
        parts.append("<table>\n<thead><tr><th>file</th><th>position</th><th>problem</th></tr></thead>\n<tbody>")
        for b in bad_records[:MAX_BAD_RECORDS_SHOWN]:
            row = b.position or ""
            parts.append(f'<tr><td>{e(b.source)}</td><td class="num">{row}</td><td>{e(b.problem)}</td></tr>')
        parts.append("</tbody>\n</table>")
        if len(bad_records) > MAX_BAD_RECORDS_SHOWN:
            parts.append(f"<p>… and {len(bad_records) - MAX_BAD_RECORDS_SHOWN} more.</p>")
    else:
        parts.append("<p>None: every record was read.</p>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- entry point


def write_report(
    run_dir: Path,
    *,
    title: str,
    metrics: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    figures: dict[str, Path],
    bad_records: list[BadRecord],
    notes: list[str],
    sections: Mapping[str, Table] | None = None,
) -> Path:
    """Write ``report.md`` and a self-contained ``report.html`` into ``run_dir``.

    A figure whose file is missing is reported as missing rather than failing the end of a run.

    Args:
        run_dir: The run directory (created if needed); figure links in the Markdown are relative to it.
        title: The report heading.
        metrics: Metric name -> value of this run (numbers, or strings shown as they are).
        baselines: Baseline name -> {metric name: value}, e.g. the dicts of
            ``polymodal.eval.baselines`` and the same metrics computed with untrained towers.
        figures: Caption -> image file (PNG, JPEG, SVG...), in display order.
        bad_records: Records skipped while reading the data; all are counted, the first
            ``MAX_BAD_RECORDS_SHOWN`` listed with file, row and problem.
        notes: Free lines shown at the top (data set, preset, seed, ...).
        sections: More metric tables after the first, heading -> (metrics, baselines), e.g. one per
            evaluation set.

    Returns:
        The path of ``report.html``; ``report.md`` is written next to it.
    """
    for table in [(metrics, baselines), *(sections or {}).values()]:
        _check_tables(*table)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figures = {str(k): Path(v) for k, v in figures.items()}
    (run_dir / "report.md").write_text(
        _markdown(run_dir, title, metrics, baselines, figures, bad_records, notes, created, sections),
        encoding="utf-8",
    )
    out = run_dir / "report.html"
    out.write_text(_html(title, metrics, baselines, figures, bad_records, notes, created, sections),
                   encoding="utf-8")
    return out
