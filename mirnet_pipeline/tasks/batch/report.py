"""The run's report: ``DESTINATION/report.html``, one self-contained page (no
network, no server: thumbnails and charts are inline) that shows in a minute
whether the model helped and what it may have wrecked.

It describes the whole destination (every row of the metrics, skipped ones
included): the summary of the run, the failures with their reasons, the
flagged images (exactly the rows whose ``flags`` are set), a contact sheet of
before/after pairs (a sample of the run, the flagged images, and with a
reference the worst by PSNR), and the distributions of every measure before
and after. Its size is bounded whatever the bucket's size: at most
``SAMPLE + FLAGGED + WORST`` thumbnail pairs and ``LISTED`` rows per table.

Counts carry ``data-count`` attributes, so a test (or a script) reads them
off the page.
"""

from __future__ import annotations

import base64
import html
import io
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from PIL import Image

from mirnet_pipeline.tasks.batch.images import decode
from mirnet_pipeline.tasks.batch.stores import open_store

REPORT = "report.html"
SAMPLE = 24  # before/after pairs drawn evenly from the enhanced images
FLAGGED = 24  # pairs of flagged images (the first in key order)
WORST = 8  # pairs of the worst images by PSNR, with a reference
LISTED = 200  # rows per table (failures, flagged): the counts above each table are complete
THUMBNAIL = 256  # longest side, pixels
MEASURES = {"mean_luminance": "mean luminance", "rms_contrast": "RMS contrast", "colourfulness": "colourfulness",
            "colour_cast": "colour cast", "sharpness": "sharpness"}


def key_from_text(text: str) -> str:
    """The object key whose text form (``job.key_text``) is ``text``."""
    def unescape(match: re.Match) -> str:
        return "\\" if match.group(0) == "\\\\" else chr(0xDC00 + int(match.group(1), 16))

    return re.sub(r"\\\\|\\x([0-9a-f]{2})", unescape, text)


def thumbnail(data: bytes, name: str, max_pixels: int) -> str:
    """A JPEG data URI of the image in ``data``, upright, at most ``THUMBNAIL`` pixels a side."""
    decoded = decode(data, name, max_pixels)
    pixels = decoded.pixels if decoded.pixels.dtype == np.uint8 else (decoded.pixels >> 8).astype(np.uint8)
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _evenly(rows: pd.DataFrame, count: int) -> pd.DataFrame:
    if len(rows) <= count:
        return rows
    return rows.iloc[np.linspace(0, len(rows) - 1, count).round().astype(int)]


def _number(value, digits: int = 3) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str] | None, rows: list[list[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header or [])
    head = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css}">{head}<tbody>{body}</tbody></table>'


def _count(name: str, value: int) -> str:
    return f'<span data-count="{name}">{value:,}</span>'


def _distributions(table: pd.DataFrame, reference: bool) -> str:
    """Histograms of each measure before and after (PSNR and SSIM with a reference), one PNG."""
    from matplotlib.figure import Figure

    done = table[table.status.isin(["ok", "skipped"])]
    panels = [(label, done[f"before_{m}"], done[f"after_{m}"]) for m, label in MEASURES.items()]
    if reference:
        panels += [("PSNR (dB)", None, done.psnr), ("SSIM", None, done.ssim)]
    figure = Figure(figsize=(3.2 * len(panels), 2.6), dpi=80, layout="constrained")
    for axes, (label, before, after) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        series = [s.dropna().to_numpy(float) for s in (before, after) if s is not None]
        values = np.concatenate(series) if series else np.array([])
        if values.size:
            bins = np.histogram_bin_edges(values, bins=min(30, max(5, values.size // 4)))
            if before is not None:
                axes.hist(series[0], bins=bins, alpha=0.6, color="#888888", label="before")
            axes.hist(series[-1], bins=bins, alpha=0.6, color="#1f77b4", label="after")
        axes.set_title(label, fontsize=10)
        axes.tick_params(labelsize=8)
    figure.axes[0].legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return ('<img class="chart" alt="distributions of the measures before and after" '
            f'src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode("ascii")}">')


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.summary td:first-child{font-weight:600}
.sheet{display:flex;flex-wrap:wrap;gap:12px}
.pair{border:1px solid #ddd;padding:6px;font-size:.75em;max-width:530px}
.pair img{width:256px;max-height:256px;object-fit:contain;margin-right:4px;vertical-align:top;image-rendering:pixelated}
.pair .key{font-family:monospace;word-break:break-all}.flag{color:#b00;font-weight:600}
.chart{max-width:100%}.note{color:#666;font-size:.85em}
"""


class Report:
    """Builds the page for ``job`` from its metrics ``table`` and the run's ``summary``."""

    def __init__(self, job, table: pd.DataFrame, summary: dict):
        self.job, self.table, self.summary = job, table, summary
        self.source = open_store(job.source, job.endpoint_url, job.region)
        self.destination = open_store(job.destination, job.endpoint_url, job.region)
        self.unreadable = 0

    def _pair(self, row) -> str:
        """One before/after pair with the row's key, flags and measures."""
        try:
            before = thumbnail(self.source.read(key_from_text(row.key)), row.key, self.job.max_pixels)
            after = thumbnail(self.destination.read(key_from_text(row.output_key)), row.output_key,
                              self.job.max_pixels)
            images = (f'<img alt="before" src="{before}"><img alt="after" src="{after}">')
        except Exception as exc:  # noqa: BLE001  (a file changed or removed since it was enhanced)
            self.unreadable += 1
            images = f'<p class="note">not shown: {html.escape(str(exc))}</p>'
        flags = row.flags if isinstance(row.flags, str) else ""
        flags = f' <span class="flag">{html.escape(flags)}</span>' if flags else ""
        figures = ", ".join(f"{label} {_number(getattr(row, f'before_{m}'))} → {_number(getattr(row, f'after_{m}'))}"
                            for m, label in MEASURES.items() if m != "sharpness")
        if pd.notna(row.psnr):
            figures += f", PSNR {row.psnr:.2f} dB, SSIM {row.ssim:.3f}"
        return (f'<div class="pair">{images}<div class="key">{html.escape(row.key)}</div>'
                f'<div>{figures}{flags}</div></div>')

    def _sheet(self, rows: pd.DataFrame) -> str:
        return '<div class="sheet">' + "".join(self._pair(row) for row in rows.itertuples()) + "</div>"

    def html(self) -> str:
        job, table, summary = self.job, self.table, self.summary
        done = table[table.status.isin(["ok", "skipped"])]
        flagged = done[done["flags"].fillna("") != ""]
        errors = table[table.status == "error"]
        reference = bool(job.reference) and done.psnr.notna().any()
        per_flag = pd.Series([f for text in flagged["flags"] for f in text.split(",")], dtype="string").value_counts()
        wall = summary.get("wall_seconds")
        rate = summary["ok"] / wall if wall else None
        runtime = ", ".join(sorted(set(done.runtime.dropna()))) or (job.runtime or "keras")
        precision = ", ".join(sorted(set(done.precision.dropna()))) or job.precision
        rows = [
            ["images (rows of the metrics)", _count("images", len(table))],
            ["enhanced by this run", _count("ok", int((table.status == "ok").sum()))],
            ["skipped (enhanced by an earlier run)", _count("skipped", int((table.status == "skipped").sum()))],
            ["failed", _count("error", len(errors))],
            ["flagged", _count("flagged", len(flagged))],
            ["this run's wall time", f"{wall:.1f} s" if wall else ""],
            ["images per second (this run)", f"{rate:.2f}" if rate is not None else ""],
            ["model", html.escape(job.model)],
            ["model version", html.escape(", ".join(sorted(set(done.model_version.dropna()))))],
            ["runtime, precision", html.escape(f"{runtime}, {precision}")],
            ["metrics", html.escape(summary.get("metrics") or "")],
        ]
        parts = [
            f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Enhancement report: "
            f"{html.escape(job.destination)}</title><style>{STYLE}</style></head><body>",
            f"<h1>Enhancement report</h1><p>{html.escape(job.source)} → {html.escape(job.destination)}, "
            f"written {datetime.now(UTC):%Y-%m-%d %H:%M UTC}</p>",
            "<h2>Summary</h2>", _table(None, rows, "summary"),
            f'<h2 id="failures">Failures ({_count("failures", len(errors))})</h2>',
        ]
        if len(errors):
            parts.append(_table(["key", "reason"], [[html.escape(r.key), html.escape(str(r.error))]
                                                    for r in errors.head(LISTED).itertuples()]))
            if len(errors) > LISTED:
                parts.append(f'<p class="note">the first {LISTED} of {len(errors):,}; all are in the metrics '
                             "(status = 'error')</p>")
        else:
            parts.append("<p>None.</p>")
        parts.append(f'<h2 id="flagged">Flagged images ({_count("flagged-rows", len(flagged))})</h2>')
        thresholds = job.flag_thresholds
        parts.append(f'<p class="note">An image is flagged when its change stands out from the whole destination\'s '
                     f"(modified z-score above {thresholds.z:g} and beyond a floor per measure: colour cast "
                     f"{thresholds.colour_cast:g}, brightness {thresholds.brightness:g}, contrast "
                     f"{thresholds.contrast:g}, sharpness {thresholds.sharpness:g} (log2), slow "
                     f"{thresholds.slow:g} (log2)); the metrics' flags column says why.</p>")
        if len(flagged):
            parts.append(_table(["flag", "images"], [[html.escape(name), _count(f"flag-{name}", int(n))]
                                                     for name, n in per_flag.items()]))
            parts.append(_table(["key", "flags"] + [f"{label} before → after" for label in MEASURES.values()],
                                [[html.escape(r.key), html.escape(r.flags)]
                                 + [f"{_number(getattr(r, f'before_{m}'))} → {_number(getattr(r, f'after_{m}'))}"
                                    for m in MEASURES] for r in flagged.head(LISTED).itertuples()], "flagged"))
            if len(flagged) > LISTED:
                parts.append(f'<p class="note">the first {LISTED} of {len(flagged):,}</p>')
            parts.append(self._sheet(flagged.head(FLAGGED)))
        else:
            parts.append("<p>None.</p>")
        if reference:
            worst = done.dropna(subset=["psnr"]).sort_values("psnr").head(WORST)
            parts.append(f"<h2>Worst by PSNR against the reference</h2><p>mean PSNR {done.psnr.mean():.2f} dB, "
                         f"mean SSIM {done.ssim.mean():.4f} over {done.psnr.notna().sum():,} images</p>")
            parts.append(self._sheet(worst))
        sample = _evenly(done[~done.index.isin(flagged.index)], SAMPLE)
        parts.append(f"<h2>Contact sheet</h2><p class=note>{len(sample)} of {len(done):,} enhanced images, "
                     "evenly spaced in key order; before on the left, after on the right.</p>")
        parts.append(self._sheet(sample))
        parts.append("<h2>Distributions</h2>")
        parts.append(_distributions(table, reference) if len(done) else "<p>No image was enhanced.</p>")
        if self.unreadable:
            parts.append(f'<p class="note">{self.unreadable} pair(s) could not be shown: the files changed or '
                         "went since they were enhanced.</p>")
        parts.append("</body></html>")
        return "".join(parts)


def write_report(job, table: pd.DataFrame, summary: dict) -> str:
    """Write ``DESTINATION/report.html`` whole (a local file appears complete
    or not at all, an S3 object likewise); returns where."""
    page = Report(job, table, summary).html().encode("utf-8")
    job.destination_store().write(REPORT, page)
    return f"{job.destination.rstrip('/')}/{REPORT}"
