"""The report of a results store as a web page: the Markdown and figures that `digitcmp report`
writes (report.write_report, the same code), rendered to HTML and kept in memory until the store
changes."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from ..study.report import write_report
from ..study.store import Store

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>digitcmp report</title><link rel="stylesheet" href="/static/style.css"></head>
<body class="report"><p><a href="/">&larr; compare digits</a></p>
{body}
</body></html>
"""


class ReportPage:
    def __init__(self, db: str | os.PathLike):
        self.db = Path(db)
        self._lock = threading.Lock()
        self._cached: tuple[tuple, str, dict[str, bytes]] | None = None

    def render(self) -> tuple[str, dict[str, bytes]]:
        """(the page's HTML, its figures as PNG bytes by file name), rebuilt when the store file changes."""
        import markdown

        with self._lock:
            # A store in WAL mode takes new runs into its -wal file first: both files say whether it changed.
            wal = Path(f"{self.db}-wal")
            files = [self.db, wal] if wal.exists() else [self.db]
            version = tuple((os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)
            if self._cached is None or self._cached[0] != version:
                store = Store(self.db, read_only=True)
                try:
                    with tempfile.TemporaryDirectory(prefix="digitcmp-report-") as folder:
                        path = write_report(store, folder, tables=False, formats=("png",), report_command="digitcmp report")
                        text = path.read_text()
                        figures = {p.name: p.read_bytes() for p in (Path(folder) / "figures").glob("*.png")}
                finally:
                    store.close()
                # No raw HTML passes: whatever a store holds reaches the page as text (report.md_text
                # escapes it in the Markdown too; this holds for any text that was not).
                md = markdown.Markdown(extensions=["tables"])
                md.preprocessors.deregister("html_block")
                md.inlinePatterns.deregister("html")
                body = md.convert(text)
                # Each table in a box of its own that scrolls sideways (a phone is narrower than a table).
                body = body.replace("<table>", '<div class="table-scroll"><table>').replace("</table>", "</table></div>")
                html = PAGE.format(body=body)
                self._cached = (version, html, figures)
            return self._cached[1], self._cached[2]
