"""Sentence splitter between the LLM and TTS: streamed text in, speakable chunks out.

Pure and clock-free: ``push`` takes whatever piece the LLM produced and returns the chunks that
are ready; ``idle`` is told how long the LLM has been silent, so a finished sentence need not wait
for the next token; ``flush`` returns the rest at the end of a reply. Markdown and emoji are stripped on
the way in, so a chunk is exactly what the voice should say.
"""

from __future__ import annotations

import re
import unicodedata

from common.config import SentenceConfig

# A link or image: [text](url) / ![alt](url) → text. Bounded so a stray "[" cannot hold text forever.
_LINK = re.compile(r"!?\[([^\[\]\n]{0,200})\]\([^()\s]{0,500}\)")
_PARTIAL_LINK = re.compile(r"!?\[[^\[\]\n]{0,200}(?:\](?:\([^()\s]{0,500})?)?\Z")
# Heading hashes, bullets and "1." numbering at the start of a line.
# Indents are bounded so the splitter never holds an endless run of blanks waiting to see a marker.
_MARKER_BODY = r"[ \t]{0,16}(?:#{1,6}|[-*+•]|\d{1,3}[.)])[ \t]+"
_MARKER_AT_START = re.compile(r"\A" + _MARKER_BODY)
_MARKER_AFTER_NL = re.compile(r"\n" + _MARKER_BODY)
_PARTIAL_MARKER = re.compile(r"[ \t]{0,16}(?:#{1,6}|[-*+•]|\d{1,3}[.)]?)?[ \t]{0,16}")
_DROP_CHARS = str.maketrans(
    {
        "*": None,
        "`": None,
        "~": None,
        "[": None,
        "]": None,
        "{": None,
        "}": None,
        "|": " ",
        "\\": " ",
        "^": " ",
        "_": " ",
        "\r": "\n",
    }
)
_DASH_RUN = re.compile(r"-{2,}")  # "--" and "---" rules read as a pause, not "dash dash dash"
# Emoji glue: variation selectors, zero-width joiner, keycap, skin tones, tag characters.
_INVISIBLE = {0x200D, 0x20E3, *range(0xFE00, 0xFE10), *range(0x1F3FB, 0x1F400), *range(0xE0020, 0xE0080)}
_KEEP_SYMBOLS = {"°"}
_UNSPEAKABLE_CATEGORIES = frozenset({"So", "Cs", "Co", "Cc", "Cf"})

MAX_END_GRACE_SECONDS = 0.05
"""The longest a finished sentence may wait for the LLM's next piece (issue 11)."""

_WHITESPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"([.!?…。！？]+)[\"'”’»)\]]*(?=\s|\Z)|\n")
_CLAUSE_END = re.compile(r"[,;:](?=\s)|[—–]")
# A full stop after these does not end a sentence.
_ABBREVIATION_WORDS = (
    "mr mrs ms dr prof sr jr st mt vs e.g i.e cf al approx dept fig inc ltd co gen col lt sgt capt rev"
)
_ABBREVIATIONS = frozenset(_ABBREVIATION_WORDS.split() + ["hon", "a.m", "p.m", "u.s", "u.k"])


def _strip_symbols(text: str) -> str:
    """Drop what a voice cannot read: emoji and pictographs with their glue, control and format characters.

    A NUL reached Piper as "embedded null character" and cost the whole sentence; other control
    characters (bell, escape) and invisible format characters (zero-width space, BOM, soft
    hyphen, bidi marks) carry nothing to say either. Blanks stay for the caller to collapse.
    """
    return "".join(ch for ch in text if ch in _KEEP_SYMBOLS or ch.isspace() or not _unspeakable(ch))


def _unspeakable(ch: str) -> bool:
    return ord(ch) in _INVISIBLE or unicodedata.category(ch) in _UNSPEAKABLE_CATEGORIES


def _clean(text: str, at_line_start: bool) -> str:
    """Markdown and emoji out; whitespace left for the caller to collapse."""
    text = _MARKER_AFTER_NL.sub("\n", text)
    if at_line_start:
        text = _MARKER_AT_START.sub("", text)
    text = _DASH_RUN.sub(" — ", _LINK.sub(r"\1", text))
    return _strip_symbols(text.translate(_DROP_CHARS))


def _collapse(text: str) -> str:
    """One space for a run of blanks, one newline for a run holding a line break."""
    return _WHITESPACE.sub(lambda m: "\n" if "\n" in m.group() else " ", text)


def clean_for_speech(text: str) -> str:
    """The words a voice should say: markdown, links, emoji and extra whitespace removed."""
    return _WHITESPACE.sub(" ", _clean(text, at_line_start=True)).strip()


def _speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def has_speech(text: str) -> bool:
    """Whether a voice would say anything for ``text`` (a word or a number survives cleaning)."""
    return _speakable(clean_for_speech(text))


def _stable_length(raw: str, at_line_start: bool) -> int:
    """How much of ``raw`` can be cleaned now without a later piece changing its meaning."""
    cut = len(raw)
    newline = raw.rfind("\n")
    if newline >= 0:
        if _PARTIAL_MARKER.fullmatch(raw, newline + 1):
            cut = newline
    elif at_line_start and _PARTIAL_MARKER.fullmatch(raw):
        cut = 0
    link = _PARTIAL_LINK.search(raw)
    if link:
        cut = min(cut, link.start())
    if raw.endswith("!"):  # may be the start of an image link "![alt](url)"
        cut = min(cut, len(raw) - 1)
    cut = min(cut, len(raw.rstrip("-")))  # a hyphen may become a "--" dash
    return cut


class SentenceSplitter:
    """Turns one streamed reply into TTS-sized chunks; reusable after ``flush``."""

    def __init__(self, cfg: SentenceConfig) -> None:
        if not 1 <= cfg.min_chars <= cfg.max_chars:
            raise ValueError(f"sentences: need 1 <= min_chars <= max_chars, got {cfg.min_chars} and {cfg.max_chars}")
        if not 0.0 <= cfg.end_grace_seconds <= MAX_END_GRACE_SECONDS:
            raise ValueError(f"sentences: end_grace_seconds must be within 0-{MAX_END_GRACE_SECONDS}, "
                             f"got {cfg.end_grace_seconds}")
        self._cfg = cfg
        self._reset()

    def _reset(self) -> None:
        self._raw = ""  # not yet cleaned: it may still be the start of a link or a list marker
        self._text = ""  # cleaned, whitespace collapsed, not yet emitted
        self._at_line_start = True
        self._emitted = False
        self._settled = False  # the LLM has been silent past the grace since the last piece

    @property
    def holding(self) -> bool:
        """Whether text is held back (worth telling ``idle`` when the LLM goes quiet)."""
        return bool(self._text or self._raw)

    def push(self, piece: str) -> list[str]:
        """Add a piece of LLM output; return the chunks that are now complete."""
        self._raw += piece
        self._settled = False
        stable = _stable_length(self._raw, self._at_line_start)
        if stable > 0:
            self._append(_clean(self._raw[:stable], self._at_line_start))
            self._raw = self._raw[stable:]
            self._at_line_start = False
        return self._drain(final=False)

    def idle(self, seconds: float) -> list[str]:
        """The LLM has sent nothing for ``seconds``: after the grace, a finished sentence at the end is ready.

        Only a real sentence end counts (. ! ? …, not "Dr." nor a number such as "3."); a clause or a
        bare word keeps waiting, as does text shorter than ``min_chars``.
        """
        if seconds < self._cfg.end_grace_seconds:
            return []
        self._settled = True
        if self._raw and not self._raw.strip("!"):  # a held "!" was only waiting in case an image link began
            self._append(_clean(self._raw, self._at_line_start))
            self._raw = ""
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of the reply: return everything still held, then start afresh."""
        if self._raw:
            self._append(_clean(self._raw, self._at_line_start))
        chunks = self._drain(final=True)
        self._reset()
        return chunks

    def _append(self, cleaned: str) -> None:
        self._text = _collapse(self._text + cleaned).lstrip()

    def _drain(self, final: bool) -> list[str]:
        chunks: list[str] = []
        # Each round removes at least one character, so this ends.
        while self._text:
            end = self._next_cut(final)
            if end is None:
                break
            chunk = self._text[:end].replace("\n", " ").strip()
            self._text = self._text[end:].lstrip()
            if _speakable(chunk):
                chunks.append(chunk)
                self._emitted = True
        return chunks

    def _next_cut(self, final: bool) -> int | None:
        """Where the next chunk ends in ``self._text``, or None to wait for more text."""
        cfg, text = self._cfg, self._text
        # A sentence end needs whitespace after it; a blank still in the raw tail counts too.
        ends_open = final or self._raw[:1].isspace()
        for match in _SENTENCE_END.finditer(text):
            end = match.end() if match.group(1) else match.start()
            if match.group(1) and end == len(text) and not ends_open and not self._settled_end(text, match):
                break
            if match.group(1) == "." and self._is_abbreviation(text, match.start()):
                continue
            span = text[:end].strip()
            if len(span) > cfg.max_chars:
                break
            if len(span) >= cfg.min_chars and _speakable(span):
                return end
        if len(text.strip()) > cfg.max_chars:
            return self._cap_cut(text)
        if not self._emitted and len(text) >= cfg.first_chunk_chars:
            clause = self._clause_cut(text)
            if clause is not None:
                return clause
        return len(text) if final else None

    def _settled_end(self, text: str, match: re.Match[str]) -> bool:
        """A sentence end at the very end of the text, after the grace: not "3." (a list number or a digit to come)."""
        if not self._settled or self._raw:
            return False
        return not (match.group(1) == "." and text[match.start() - 1 : match.start()].isdigit())

    def _is_abbreviation(self, text: str, dot: int) -> bool:
        """True for "Dr." / "e.g." / an initial "J.": a full stop that does not end a sentence."""
        word = text[:dot].rsplit(None, 1)[-1] if text[:dot].strip() else ""
        word = word.lstrip("\"'“‘«([").lower()
        return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha() and text[dot - 1].isupper())

    def _clause_cut(self, text: str) -> int | None:
        """The last clause break leaving a chunk between min_chars and max_chars long."""
        best = None
        for match in _CLAUSE_END.finditer(text, 0, self._cfg.max_chars + 1):
            head = text[: match.end()].strip()
            if self._cfg.min_chars <= len(head) <= self._cfg.max_chars and _speakable(head):
                best = match.end()
        return best

    def _cap_cut(self, text: str) -> int:
        """Cut an over-long sentence at a clause, else at a space, else at max_chars."""
        clause = self._clause_cut(text)
        if clause is not None:
            return clause
        limit = self._cfg.max_chars
        for space in range(limit, 0, -1):
            if text[space].isspace() and len(text[:space].strip()) >= self._cfg.min_chars:
                if _speakable(text[:space]):
                    return space
                break
        return limit
