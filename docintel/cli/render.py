"""Everything the CLI shows: the consoles, tables, the live table, progress.

Data goes to stdout, messages and errors to stderr. Rich leaves out colour
under NO_COLOR and all ANSI codes when a stream is not a terminal; callers
branch on `is_terminal` for live displays (Live under a pipe prints only the
last frame). User data (file names, summaries) is always escaped or printed
with markup off: square brackets are Rich markup.

Rich is imported inside the functions that draw (it costs more to import
than `docintel list --json` may take to run); what scripts get, JSON and
plain lines, needs none of it.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from docintel.core.statuses import FAILED, IN_FLIGHT, PENDING, TERMINAL

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.table import Table
    from rich.text import Text

    from docintel.cli.client import Event

STATUS_STYLE = {
    "pending": "yellow",
    "processing": "cyan",
    "analyzing": "blue",
    "completed": "green",
    "failed": "bold red",
    "deleted": "magenta",
}
SENTIMENT_STYLE = {"positive": "green", "negative": "red", "neutral": "white", "mixed": "yellow"}
STAGES = (PENDING, *IN_FLIGHT)

_consoles: dict[str, tuple[Any, Console]] = {}


def _console(name: str, stream: Any, **kwargs: Any) -> Console:
    # One console per stream object: the stream changes under CliRunner, and
    # Rich decides about colour when the console is made.
    cached = _consoles.get(name)
    if cached is None or cached[0] is not stream:
        from rich.console import Console

        cached = (stream, Console(file=stream, highlight=False, **kwargs))
        _consoles[name] = cached
    return cached[1]


def out() -> Console:
    """The console for data (stdout)."""
    return _console("out", sys.stdout)


def err() -> Console:
    """The console for messages and errors (stderr)."""
    return _console("err", sys.stderr)


def error(message: str) -> None:
    """One line on stderr: `docintel: message`."""
    err().print(f"docintel: {printable(message)}", markup=False, style="red", soft_wrap=True)


def note(message: str) -> None:
    err().print(printable(message), markup=False, style="dim", soft_wrap=True)


def json_line(obj: Any) -> None:
    """One JSON object per line, flushed now (for `| jq` and tail-like use)."""
    sys.stdout.write(_json(obj) + "\n")
    sys.stdout.flush()


def json_doc(obj: Any) -> None:
    sys.stdout.write(_json(obj, indent=2) + "\n")
    sys.stdout.flush()


def _json(obj: Any, indent: int | None = None) -> str:
    # Readable non-ASCII text, but every character a terminal would act on as a
    # \\u escape (json.dumps escapes only C0): the same JSON to a parser.
    # (Raw newlines in the output are indentation: json.dumps escapes C0 in strings.)
    text = json.dumps(obj, ensure_ascii=False, indent=indent)
    return _UNESCAPED_BY_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def line(markup: str) -> None:
    """A line of data; never wrapped (scripts cut and grep it)."""
    out().print(markup, soft_wrap=True)
    sys.stdout.flush()


def plain(text: str) -> None:
    """A line of data, printed as is."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def escape(markup: str) -> str:
    """User data made safe to print as Rich markup (`[x]` is markup), controls shown."""
    from rich.markup import escape as rich_escape

    return rich_escape(printable(markup))


# Characters a terminal acts on rather than shows: C0 and C1 controls (ESC starts
# sequences that set the title or clear the screen; a newline or tab forges rows
# in piped output), and the bidi overrides that reorder what is shown.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNESCAPED_BY_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(value: Any) -> Any:
    """Server data made safe for a terminal: every control character shown escaped
    (`\\x1b`, `\\n`), in a string or in every string of a dict or list."""
    if isinstance(value, str):
        return _CONTROLS.sub(_shown, value)
    if isinstance(value, dict):
        return {k: printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def _shown(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def status_text(status: str) -> Text:
    from rich.text import Text

    return Text(status, style=STATUS_STYLE.get(status, ""))


def styled_status(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{escape(status)}[/]" if style else escape(status)


# --- times ------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def local_time(value: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    parsed = parse_time(value)
    return parsed.astimezone().strftime(fmt) if parsed else (value or "")


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


# --- list / show / status ----------------------------------------------------


def documents_table(items: Iterable[dict[str, Any]]) -> Table:
    from rich.table import Table
    from rich.text import Text

    items = [printable(d) for d in items]
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("FILE", overflow="fold", min_width=16)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("SIZE", justify="right", no_wrap=True)
    table.add_column("UPDATED", no_wrap=True)
    for d in items:
        table.add_row(
            Text(d["id"]),
            Text(d["filename"]),
            status_text(d["status"]),
            human_bytes(d.get("size_bytes", 0)),
            local_time(d.get("updated_at")),
        )
    return table


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def document_detail(doc: dict[str, Any]) -> RenderableType:
    """`docintel show`: header, timeline, analysis."""
    doc = printable(doc)
    from rich.console import Group
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    parts: list[RenderableType] = []
    header = Text()
    header.append(doc["filename"], style="bold")
    header.append("  ")
    header.append_text(status_text(doc["status"]))
    parts.append(header)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column(overflow="fold")
    facts.add_row("id", doc["id"])
    facts.add_row("type", f"{doc.get('content_type', '')}, {human_bytes(doc.get('size_bytes', 0))}")
    facts.add_row("sha256", doc.get("sha256", ""))
    facts.add_row("created", local_time(doc.get("created_at")))
    parts.append(facts)
    if doc.get("error"):
        parts.append(Text.assemble(("\nError: ", "bold red"), doc["error"]))

    history = doc.get("history") or []
    if history:
        parts.append(Text("\nTimeline", style="bold"))
        timeline = Table.grid(padding=(0, 2))
        timeline.add_column(no_wrap=True)
        timeline.add_column(no_wrap=True)
        timeline.add_column(justify="right", style="dim", no_wrap=True)
        timeline.add_column(overflow="fold")
        times = [parse_time(h.get("at")) for h in history]
        for i, h in enumerate(history):
            took = ""
            if i + 1 < len(history) and times[i] and times[i + 1]:
                took = duration((times[i + 1] - times[i]).total_seconds())  # type: ignore[operator]
            timeline.add_row(
                local_time(h.get("at"), "%H:%M:%S"),
                status_text(h["status"]),
                took,
                Text(h.get("detail") or ""),
            )
        parts.append(Padding(timeline, (0, 0, 0, 2)))

    analysis = doc.get("analysis")
    if analysis:
        parts.extend(analysis_parts(analysis))
    return Group(*parts)


def analysis_parts(analysis: dict[str, Any]) -> list[RenderableType]:
    from rich.padding import Padding
    from rich.text import Text

    analysis = printable(analysis)
    parts: list[RenderableType] = [Text("\nSummary", style="bold")]
    parts.append(Padding(Text(analysis.get("summary", "")), (0, 0, 0, 2)))
    topics = analysis.get("key_topics") or []
    parts.append(Text.assemble(("\nTopics     ", "bold"), ", ".join(topics) or "—"))
    sentiment = analysis.get("sentiment", "")
    parts.append(
        Text.assemble(("Sentiment  ", "bold"), (sentiment, SENTIMENT_STYLE.get(sentiment, "")))
    )
    items = analysis.get("action_items") or []
    parts.append(Text("Action items", style="bold"))
    if items:
        for item in items:
            parts.append(Padding(Text.assemble("• ", item), (0, 0, 0, 2)))
    else:
        parts.append(Padding(Text("none", style="dim"), (0, 0, 0, 2)))
    by = f"analysed by {analysis.get('analyzer', '?')} ({analysis.get('model', '?')})"
    parts.append(Text(by, style="dim"))
    return parts


# --- the live table of `watch` -------------------------------------------------


@dataclass
class Row:
    document_id: str
    filename: str
    status: str
    stages: list[tuple[str, datetime]] = field(default_factory=list)
    updated: datetime | None = None
    error: str | None = None
    summary: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL or self.status == "deleted"


class Board:
    """The state of `watch`: one row per document, fed by events; renders to fit the terminal.

    Rich crops a live display taller than the terminal (the end gives way to
    `...`), so the board picks its rows for the height it is given: first the
    documents not yet finished (processing and analysing ones, then queued
    ones), then the newest finished ones; what does not fit folds into one
    summary line. Rows read newest first; a failed row has a second line
    saying why.
    """

    def __init__(self, title: str | None = None) -> None:
        self.rows: dict[str, Row] = {}  # in the order first seen: oldest first
        self.title = title
        self.connection_note: str | None = None

    def seed(self, doc: dict[str, Any]) -> None:
        """A row from a listed document (before its next event arrives)."""
        doc = printable(doc)
        at = parse_time(doc.get("updated_at"))
        row = Row(doc["id"], doc["filename"], doc["status"], error=doc.get("error"), updated=at)
        if at and doc["status"] in STAGES:
            row.stages.append((doc["status"], at))
        self.rows.setdefault(doc["id"], row)

    def apply(self, event: Event) -> Row:
        data = printable(event.data)
        doc_id = event.document_id
        at = parse_time(data.get("timestamp")) or datetime.now(UTC)
        row = self.rows.get(doc_id)
        if row is None:
            row = self.rows[doc_id] = Row(doc_id, data.get("filename") or "", event.status)
        if data.get("filename"):
            row.filename = data["filename"]
        row.status = event.status
        row.updated = at
        if not row.stages or row.stages[-1][0] != event.status:
            row.stages.append((event.status, at))
        if data.get("error"):
            row.error = data["error"]
        if data.get("analysis"):
            row.summary = data["analysis"].get("summary")
        return row

    @staticmethod
    def stage_time(row: Row, stage: str, now: datetime) -> Text:
        """How long the row spent in `stage` (still counting if it is there now)."""
        from rich.text import Text

        for i, (name, started) in enumerate(row.stages):
            if name != stage:
                continue
            running = i + 1 == len(row.stages)
            ended = now if running else row.stages[i + 1][1]
            seconds = max(0.0, (ended - started).total_seconds())
            return Text(duration(seconds), style="bold" if running and not row.terminal else "")
        return Text("—" if row.terminal else "", style="dim")

    @staticmethod
    def _lines_for(row: Row) -> int:
        return 2 if row.status == FAILED else 1

    def pick(self, budget: int) -> tuple[list[Row], Counter[str]]:
        """The rows that fit in `budget` lines (newest first), and the folded ones by status."""
        newest = list(reversed(self.rows.values()))
        order = (
            [r for r in newest if r.status in IN_FLIGHT]
            + [r for r in newest if not r.terminal and r.status not in IN_FLIGHT]
            + [r for r in newest if r.terminal]
        )
        shown: set[str] = set()
        folded: Counter[str] = Counter()
        finished_full = False  # finished rows shown are the newest ones, without gaps
        for row in order:
            lines = self._lines_for(row)
            if lines <= budget and not (row.terminal and finished_full):
                shown.add(row.document_id)
                budget -= lines
            else:
                folded[row.status] += 1
                finished_full = finished_full or row.terminal
        return [r for r in newest if r.document_id in shown], folded

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        width = options.max_width
        height = options.height or options.max_height
        caption = self.connection_note or ("waiting for events…" if not self.rows else None)
        columns = _board_columns(width)
        chrome = 2 + (self.title is not None) + (caption is not None)  # header and rule
        rows, folded = self.pick(max(0, height - chrome))
        if folded:  # the summary line takes a row's place
            rows, folded = self.pick(max(0, height - chrome - 1))

        def fit(text: Text) -> Text:
            text.no_wrap = True
            text.truncate(width, overflow="ellipsis")
            return text

        if self.title is not None:
            yield fit(Text(self.title, style="bold"))
        yield fit(_board_line(columns, [Text(c.name, style="bold") for c in columns]))
        yield fit(Text("─" * min(width, sum(c.width + c.gap for c in columns))))
        now = datetime.now(UTC)
        for row in rows:
            cells = {
                "ID": Text(row.document_id[:8]),
                "FILE": Text(row.filename),
                "STATUS": status_text(row.status),
                "UPDATED": Text(
                    row.updated.astimezone().strftime("%H:%M:%S") if row.updated else ""
                ),
                **{
                    name: self.stage_time(row, stage, now)
                    for name, stage in zip(STAGE_COLUMNS, STAGES, strict=True)
                },
            }
            yield fit(_board_line(columns, [cells[c.name] for c in columns]))
            if row.status == FAILED:
                reason = " ".join((row.error or "no reason given").split())
                indent = " " * (columns[0].width + columns[1].gap)
                yield fit(Text.assemble(indent, ("↳ " + reason, STATUS_STYLE[FAILED])))
        if folded:
            counts = [f"{folded[s]} {s}" for s in STATUS_STYLE if folded[s]]
            yield fit(Text("+" + ", ".join(counts), style="dim"))
        if caption is not None:
            yield fit(Text(caption, style="dim"))


STAGE_COLUMNS = ("QUEUED", "EXTRACT", "ANALYSE")


class _Column(NamedTuple):
    name: str
    width: int
    right: bool = False  # justified right (times)
    gap: int = 2  # spaces before it


# Times are at most 6 cells ("1m05s", "183ms") under 7-cell headings: one space between them
# is enough, and leaves FILE 23 cells at 80 columns.
_BOARD = (
    _Column("ID", 8, gap=0),
    _Column("FILE", 0),
    _Column("STATUS", 10),
    _Column("QUEUED", 7, right=True),
    _Column("EXTRACT", 7, right=True, gap=1),
    _Column("ANALYSE", 7, right=True, gap=1),
    _Column("UPDATED", 8),
)


def _board_columns(width: int) -> list[_Column]:
    """The board's columns for a terminal `width` cells wide.

    FILE takes what the others leave, between 10 and 40 cells; below about 70
    columns UPDATED goes, so that names stay readable.
    """
    columns = list(_BOARD)
    if width - sum(c.width + c.gap for c in columns) < 12:
        columns.pop()
    rest = width - sum(c.width + c.gap for c in columns)
    return [c._replace(width=min(40, max(10, rest))) if c.name == "FILE" else c for c in columns]


def _board_line(columns: list[_Column], cells: list[Text]) -> Text:
    from rich.text import Text

    line = Text()
    for column, cell in zip(columns, cells, strict=True):
        cell = cell.copy()
        cell.truncate(column.width, overflow="ellipsis")
        cell.align("right" if column.right else "left", column.width)
        line.append(" " * column.gap)
        line.append_text(cell)
    line.rstrip()
    return line


def outcome_line(row: Row) -> Text:
    """The one-line result of a document that reached the end (`upload --wait`)."""
    from rich.text import Text

    text = Text.assemble(
        (row.status, STATUS_STYLE.get(row.status, "")), f"  {row.filename}  {row.document_id}"
    )
    if row.status == "completed" and row.summary:
        text.append("  " + row.summary)
    elif row.error:
        text.append("  " + row.error)
    return text
