"""Turn the benchmarks' Markdown results into the reStructuredText of the results page.

The benchmark scripts write ``results.md`` (a heading, one bold line per evaluation set and a pipe
table per set, see :func:`manifold_ps.benchmarking.results.write_results`) next to
``results.json``. Committed results live under ``benchmarks/results/``, either flat, named after
the workload and profile (``benchmarks/results/bunny_mnist-cpu.md`` with
``bunny_mnist-cpu.json`` beside it), or one folder per run (``benchmarks/results/<run>/results.md``).
Every ``*.md`` found there (recursively, sorted by path, ``README.md`` excepted) becomes one
section of ``_generated/results.rst``, but the prior-quality reports of
``benchmarks/prior_quality.py`` (``prior_quality-<workload>-<profile>.md``), which make up
``_generated/prior_quality.rst`` (included by ``docs/prior_quality.rst``). Figures referenced
as ``![alt](file.png)`` are copied next to the generated page.

The calibration plots the benchmark pipeline writes (``figures/<task>/calibration.png`` of a run)
are shown at the end of their section when they are committed: for a flat file
``<stem>.md`` every ``benchmarks/results/figures/<stem>-*calibration*.png`` (for example
``bunny_mnist-cpu-calibration.png``, or ``image_restoration-cpu-denoising-calibration.png`` for
one task of several), for a run folder every ``<run>/figures/**/*calibration*.png``. A missing
plot is simply not shown.

Only the small Markdown subset those files use is understood: ATX headings, paragraphs, bullet
lists, pipe tables, images, links, ``**bold**`` and ```code```. Everything else is escaped, so a
results file can never make the documentation build fail.
"""

from __future__ import annotations

import glob
import re
import shutil
from pathlib import Path

__all__ = ["markdown_to_rst", "write_results_page", "calibration_figures", "RESULTS_DIR", "PRIOR_QUALITY_PREFIX"]

RESULTS_DIR = Path("benchmarks") / "results"

PRIOR_QUALITY_PREFIX = ("prior_quality-", "gaussian_mixture-")
"""File-name prefix of the prior-quality reports (their own page)."""

_HEADING_CHARS = "=-~^\"'"
_INLINE = re.compile(
    r"(?P<code>`[^`]+`)"
    r"|(?P<bold>\*\*[^*]+\*\*)"
    r"|(?P<link>\[[^\]]+\]\([^)\s]+\))"
)
_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)\s*$")
_ESCAPE = re.compile(r"([\\`*_|<>\[\]])")


def _escape(text: str) -> str:
    return _ESCAPE.sub(r"\\\1", text)


def _inline(text: str) -> str:
    """Markdown inline markup -> reStructuredText, escaping everything else."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(_escape(text[pos : m.start()]))
        # inline markup must be preceded by whitespace or punctuation in rst
        if m.start() > 0 and text[m.start() - 1].isalnum():
            out.append("\\ ")
        tok = m.group(0)
        if m.group("code"):
            inner = tok[1:-1].strip()
            out.append(f"``{inner}``" if inner else "")
        elif m.group("bold"):
            inner = tok[2:-2].strip()
            out.append(f"**{_escape(inner)}**" if inner else "")
        else:
            label, url = re.match(r"\[([^\]]+)\]\(([^)]+)\)", tok).groups()  # type: ignore[union-attr]
            out.append(f"`{_escape(label)} <{url}>`__")
        pos = m.end()
        # inline markup must be followed by a space or punctuation in rst
        if pos < len(text) and (text[pos].isalnum()):
            out.append("\\ ")
    out.append(_escape(text[pos:]))
    return "".join(out)


def _split_row(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [c.strip() for c in line.split("|")]


def _is_rule(line: str) -> bool:
    return bool(re.fullmatch(r"\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*", line))


def _table(rows: list[list[str]]) -> list[str]:
    width = max(len(r) for r in rows)
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in rows:
        row = row + [""] * (width - len(row))
        for j, cell in enumerate(row):
            bullet = "   * - " if j == 0 else "     - "
            lines.append(bullet + (_inline(cell) or "\\ "))
    lines.append("")
    return lines


def markdown_to_rst(text: str, *, base_level: int = 1, image_dir: Path | None = None,
                    image_prefix: str = "", images: list[Path] | None = None) -> str:
    """Convert the Markdown subset of ``results.md`` files to reStructuredText.

    Args:
        text: The Markdown.
        base_level: Heading level of a ``#`` heading (0 = page title, 1 = section, ...).
        image_dir: Folder of the Markdown file, to resolve image paths.
        image_prefix: Path prefix of images in the output (where they are copied to).
        images: Receives the image files referenced (and existing).

    Returns:
        reStructuredText.
    """
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        image = _IMAGE.match(stripped)
        if not stripped:
            i += 1
            continue
        if heading:
            title = _inline(heading.group(2)) or "\\ "
            level = min(base_level + len(heading.group(1)) - 1, len(_HEADING_CHARS) - 1)
            out += [title, _HEADING_CHARS[level] * max(len(title), 4), ""]
            i += 1
        elif image:
            src = image.group("src")
            path = (image_dir / src) if image_dir is not None else Path(src)
            if image_dir is not None and path.is_file() and "://" not in src:
                if images is not None:
                    images.append(path)
                out += [f".. image:: {image_prefix}{path.name}", f"   :alt: {image.group('alt') or path.stem}", ""]
            else:
                out += [f"*(figure not available: {_escape(src)})*", ""]
            i += 1
        elif stripped.startswith("|") and i + 1 < len(lines) and _is_rule(lines[i + 1]):
            rows = [_split_row(line)]
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_split_row(lines[i]))
                i += 1
            out += _table(rows)
        elif re.match(r"^\s*[-*+]\s+", line):
            while i < len(lines) and re.match(r"^\s*[-*+]\s+", lines[i]):
                item = re.sub(r"^\s*[-*+]\s+", "", lines[i])
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip() \
                        and not re.match(r"^\s*[-*+]\s+", lines[i]):
                    item += " " + lines[i].strip()
                    i += 1
                out.append("* " + _inline(item))
            out.append("")
        else:
            para = [stripped]
            i += 1
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||\s*[-*+]\s|!\[)", lines[i].lstrip()):
                para.append(lines[i].strip())
                i += 1
            out += [_inline(" ".join(para)), ""]
    return "\n".join(out).rstrip() + "\n"


_NONE_YET = """\
No benchmark result has been recorded in this checkout yet: ``benchmarks/results/`` holds no
``*.md`` file. Run a benchmark and commit what it writes, for example

.. code-block:: bash

   export MANIFOLD_PS_DATA=/path/to/data
   python benchmarks/bunny_mnist.py --profile cpu
   python benchmarks/era5_imputation.py --profile cpu

then copy the ``results.md`` and ``results.json`` each run writes into ``benchmarks/results/`` as
``<workload>-<profile>.md`` and ``.json`` (for example ``bunny_mnist-cpu.md``), commit them and
rebuild the documentation.
"""


_CALIBRATION_TEXT = (
    "*Calibration of the posterior draws*: empirical coverage of their central intervals against the nominal "
    "level, over all vertices and over the missing ones; the dotted diagonal is a calibrated sampler, a curve "
    "below it an over-confident one."
)


def calibration_figures(path: Path) -> list[tuple[Path, str]]:
    """The committed calibration plots of the results file ``path``, with the name each is copied to.

    Returns:
        ``(file, copied name)`` pairs, sorted by path; empty when none is committed.
    """
    if path.stem == "results":  # a run folder: its own figures, named after the folder and their path
        folder = path.parent / "figures"
        found = sorted(folder.glob("**/*calibration*.png"))
        return [(p, "-".join((path.parent.name, *p.relative_to(folder).parts))) for p in found]
    found = sorted((path.parent / "figures").glob(f"{glob.escape(path.stem)}-*calibration*.png"))
    return [(p, p.name) for p in found]


_NO_PRIOR_QUALITY = """\
No prior-quality report has been recorded in this checkout yet: ``benchmarks/results/`` holds no
``prior_quality-*.md`` file. After a workload's benchmark has trained its prior, run

.. code-block:: bash

   python benchmarks/prior_quality.py --workload bunny-mnist --profile cpu --commit
   python benchmarks/prior_quality.py --workload era5-imputation --profile cpu --commit

commit what ``--commit`` wrote into ``benchmarks/results/`` and rebuild the documentation.
"""


def write_results_page(root: Path, out_dir: Path) -> Path:
    """Write ``out_dir/results.rst`` from every ``benchmarks/results/**/*.md`` under ``root`` but
    the prior-quality reports, and ``out_dir/prior_quality.rst`` from those
    (``prior_quality-*.md`` and the mixture reports ``gaussian_mixture-*.md``).

    Each file is rewritten only when its content changes, so Sphinx does not rebuild needlessly.

    Returns:
        The path of the generated results fragment.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    results = root / RESULTS_DIR
    files = sorted(p for p in results.rglob("*.md") if p.name.lower() != "readme.md") if results.is_dir() else []
    quality = [p for p in files if p.name.startswith(PRIOR_QUALITY_PREFIX)]
    _write_fragment(root, [p for p in files if p not in quality], out_dir / "results.rst", _NONE_YET)
    _write_fragment(root, quality, out_dir / "prior_quality.rst", _NO_PRIOR_QUALITY)
    return out_dir / "results.rst"


def _write_fragment(root: Path, files: list[Path], target: Path, empty: str) -> None:
    """One generated page fragment: a section per Markdown file (``empty`` when there is none)."""
    parts: list[str] = []
    images: list[tuple[Path, str]] = []  # (file, name of its copy)
    fig_dir = target.parent / "results_figures"
    for path in files:
        rel = path.relative_to(root).as_posix()
        body = path.read_text(encoding="utf-8")
        if not re.match(r"^\s*#\s", body):
            title = _escape(path.parent.name if path.stem == "results" else path.stem)
            parts.append(f"{title}\n{'-' * max(len(title), 4)}\n")
            base = 2
        else:
            base = 1
        # figures of flat files are named after the file, those of run folders after the folder
        tag = path.parent.name if path.stem == "results" else path.stem
        prefix = f"/_generated/results_figures/{tag}-"
        found: list[Path] = []
        parts.append(markdown_to_rst(body, base_level=base, image_dir=path.parent,
                                     image_prefix=prefix, images=found))
        calibration = calibration_figures(path)
        if calibration:
            parts.append(_CALIBRATION_TEXT + "\n")
            for src, name in calibration:
                parts.append(f".. image:: /_generated/results_figures/{name}\n   :alt: {src.stem}\n")
        data = path.with_suffix(".json")
        source = f"*Source:* ``{rel}``"
        if data.is_file():
            source += f" (data: ``{data.relative_to(root).as_posix()}``)"
        parts.append(source + "\n")
        images += [(p, f"{tag}-{p.name}") for p in found]
        images += calibration
    text = "\n".join(parts) if parts else empty
    if images:
        fig_dir.mkdir(exist_ok=True)
        for src, name in images:
            dst = fig_dir / name
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                shutil.copyfile(src, dst)
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
