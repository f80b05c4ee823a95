"""The sentence splitter: what reaches the voice, and when."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_server.pipeline.sentences import SentenceSplitter, clean_for_speech, has_speech
from common.config import SentenceConfig

CFG = SentenceConfig(max_chars=80, min_chars=12, first_chunk_chars=40)


def split(text: str, cfg: SentenceConfig = CFG, step: int = 1) -> list[str]:
    """Feed ``text`` in pieces of ``step`` characters, as an LLM would, then flush."""
    splitter = SentenceSplitter(cfg)
    chunks: list[str] = []
    for i in range(0, len(text), step):
        chunks += splitter.push(text[i : i + step])
    return chunks + splitter.flush()


def no_space(text: str) -> str:
    return "".join(text.split())


# --------------------------------------------------------------------------- when chunks come out


def test_a_sentence_is_ready_as_soon_as_whitespace_follows_its_end() -> None:
    splitter = SentenceSplitter(CFG)
    assert splitter.push("The weather is lovely today.") == []  # could still be "today.com"
    assert splitter.push(" And") == ["The weather is lovely today."]
    assert splitter.flush() == ["And"]


@pytest.mark.parametrize(
    "sentence",
    ["The weather is lovely today.", "Is there anything else?", "That is wonderful news!", 'He said "see you soon."',
     "Well, I am not so sure…"],
)
def test_a_finished_sentence_is_spoken_after_the_grace_when_the_llm_pauses(sentence: str) -> None:
    splitter = SentenceSplitter(CFG)
    assert splitter.push(sentence) == []
    assert splitter.idle(CFG.end_grace_seconds / 2) == [], "inside the grace the next token may still change it"
    assert splitter.idle(CFG.end_grace_seconds) == [sentence]
    assert not splitter.holding
    assert splitter.push(" And then") == [] and splitter.flush() == ["And then"]


@pytest.mark.parametrize("unfinished", ["Please call Dr.", "The number you need is 3.", "Let me see, the trains",
                                        "The next one leaves at", "Shortest."])
def test_no_grace_for_abbreviations_numbers_clauses_or_short_text(unfinished: str) -> None:
    splitter = SentenceSplitter(CFG)
    assert splitter.push(unfinished) == []
    assert splitter.idle(10.0) == []
    assert splitter.holding
    assert no_space("".join(splitter.flush())) == no_space(unfinished), "held, not lost"


def test_after_a_grace_release_the_next_sentence_waits_for_its_own() -> None:
    splitter = SentenceSplitter(CFG)
    splitter.push("The weather is lovely today.")
    assert splitter.idle(1.0) == ["The weather is lovely today."]
    assert splitter.push(" Bring an umbrella anyway.") == []
    assert splitter.idle(0.0) == [], "a new piece restarts the grace"
    assert splitter.idle(1.0) == ["Bring an umbrella anyway."]


def test_a_grace_past_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="end_grace_seconds"):
        SentenceSplitter(SentenceConfig(end_grace_seconds=0.5))


@pytest.mark.parametrize("end", ["!", "?", "…", "...", "?!", '."', ".”", "!)", ".'"])
def test_every_sentence_end_mark_and_closing_quote_ends_a_chunk(end: str) -> None:
    first = f"This is the first sentence{end}"
    assert split(first + " This is the second one.") == [first, "This is the second one."]


@pytest.mark.parametrize(
    "text",
    [
        "Please see Dr. Watson about your cough tomorrow.",
        "Bring something sweet, e.g. a cake or some biscuits.",
        "The price went up by 3.5 percent over the year.",
        "I met Mrs. Hudson and J. Smith at the station.",
        "It was made in the U.S. many years ago, I think.",
    ],
)
def test_abbreviations_initials_and_decimals_do_not_end_a_sentence(text: str) -> None:
    assert split(text, SentenceConfig(max_chars=200, min_chars=5, first_chunk_chars=200)) == [text]


def test_short_sentences_are_merged_until_long_enough() -> None:
    assert split("Yes. Sure. Of course it is. Bye now, friend.") == ["Yes. Sure. Of course it is.", "Bye now, friend."]


def test_a_short_last_sentence_is_not_held_back_by_flush() -> None:
    splitter = SentenceSplitter(CFG)
    assert splitter.push("A perfectly long first sentence here. Ok") == ["A perfectly long first sentence here."]
    assert splitter.flush() == ["Ok"]
    assert splitter.flush() == []


def test_a_long_sentence_is_cut_at_a_clause_within_max_chars() -> None:
    text = (
        "When the telephone rang in the hallway that night, nobody wanted to answer it, "
        "because everybody already knew who would be calling at such an hour and why."
    )
    chunks = split(text, step=7)
    assert all(len(c) <= CFG.max_chars for c in chunks)
    assert chunks[0].endswith(",")
    assert no_space(" ".join(chunks)) == no_space(text)


def test_a_long_sentence_without_clauses_is_cut_at_a_space() -> None:
    text = "word " * 40
    chunks = split(text.strip() + ".")
    assert all(len(c) <= CFG.max_chars for c in chunks)
    assert all(not c.startswith("ord") for c in chunks)  # never inside a word
    assert no_space("".join(chunks)) == no_space(text + ".")


def test_a_giant_word_is_cut_hard_at_max_chars() -> None:
    chunks = split("x" * 200)
    assert [len(c) for c in chunks] == [80, 80, 40]


def test_the_first_chunk_is_cut_at_a_clause_so_speech_starts_sooner() -> None:
    splitter = SentenceSplitter(CFG)
    out = splitter.push("Well, the thing about old telephones, as you surely know")
    assert out == ["Well, the thing about old telephones,"]
    # Later chunks wait for a real sentence end.
    assert splitter.push(", is that they ring loudly, very loudly, and ") == []
    assert splitter.push("then stop. Next") == [
        "as you surely know, is that they ring loudly, very loudly, and then stop."
    ]
    assert splitter.flush() == ["Next"]


def test_the_first_chunk_rule_applies_again_after_flush() -> None:
    splitter = SentenceSplitter(CFG)
    splitter.push("One reply that is long enough to stand alone. ")
    splitter.flush()
    assert splitter.push("Second reply, with a clause break, that keeps going on") == [
        "Second reply, with a clause break,"
    ]


def test_a_line_break_ends_a_chunk() -> None:
    assert split("Here is the plan for today\nWe start at the station") == [
        "Here is the plan for today",
        "We start at the station",
    ]


# --------------------------------------------------------------------------- what chunks say


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("**Bold** and *italic* and __under__ and `code`", "Bold and italic and under and code"),
        ("# Title\n## Subtitle", "Title Subtitle"),
        ("- one\n* two\n+ three\n1. four\n2) five", "one two three four five"),
        ("See [the docs](https://example.com/a_b) now", "See the docs now"),
        ("Look ![a cat](http://x/cat.png) here", "Look a cat here"),
        ("Great job! 🎉👍🏽 See you ❤️ soon ✨", "Great job! See you soon"),
        ("Family: 👨‍👩‍👧 done", "Family: done"),
        ("It is 25°C and 50% humid", "It is 25°C and 50% humid"),
        ("lots   of\n\n\nspace\t here", "lots of space here"),
        ("~~old~~ new", "old new"),
        ("| a | b |\n|---|---|", "a b — —"),
        ("wait -- really\n\n---\nyes", "wait — really — yes"),
        ("well-known snake_case", "well-known snake case"),
        ("3.5 and 1,000 and 2024. Fine", "3.5 and 1,000 and 2024. Fine"),
    ],
)
def test_clean_for_speech_removes_what_a_voice_should_not_read(raw: str, spoken: str) -> None:
    assert clean_for_speech(raw) == spoken


def test_markdown_split_across_pieces_is_still_removed() -> None:
    text = "Sure!\n## Options\n- Visit [the museum](http://m.example/x) today.\n- **Walk** in the park. 🌳\n"
    for step in (1, 2, 3, 5):
        chunks = split(text, SentenceConfig(max_chars=200, min_chars=1, first_chunk_chars=200), step=step)
        assert chunks == ["Sure!", "Options", "Visit the museum today.", "Walk in the park."], step


def test_endless_blanks_or_an_unclosed_link_are_not_held_forever() -> None:
    splitter = SentenceSplitter(CFG)
    for _ in range(1000):
        splitter.push("\n   ")
    chunks = splitter.push("[an unclosed link that just goes on " + "and on " * 40)
    # Nothing waits for a "]" that never arrives: the text is spoken, capped at max_chars.
    assert chunks and chunks[0].startswith("an unclosed link that just goes on and on")


def test_emoji_only_or_empty_input_gives_no_chunks() -> None:
    assert split("🎉🎉 ✨") == []
    assert split("") == []
    assert split("   \n  ") == []


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="min_chars"):
        SentenceSplitter(SentenceConfig(max_chars=10, min_chars=20))


def test_default_config_keeps_ordinary_replies_whole() -> None:
    text = "Hello, operator speaking. The next train to Brighton leaves at half past four from platform two."
    assert split(text, SentenceConfig(), step=4) == [
        "Hello, operator speaking.",
        "The next train to Brighton leaves at half past four from platform two.",
    ]


# --------------------------------------------------------------------------- properties

_TOKENS = st.sampled_from(
    list("abcdefghij ABC")
    + ["    ", "\t\t\t\t"]
    + list(".,;:!?…—-'\"()[]{}|*_#`~\n\t")
    + ["Dr. ", "e.g. ", "3.5", "🎉", "👍🏽", "](x)", "\n- "]
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.lists(_TOKENS, max_size=8).map("".join), max_size=40),
    max_chars=st.integers(min_value=5, max_value=120),
    min_chars=st.integers(min_value=1, max_value=40),
    first=st.integers(min_value=1, max_value=150),
)
def test_chunks_say_exactly_the_cleaned_text(pieces: list[str], max_chars: int, min_chars: int, first: int) -> None:
    cfg = SentenceConfig(max_chars=max(max_chars, min_chars), min_chars=min_chars, first_chunk_chars=first)
    splitter = SentenceSplitter(cfg)
    chunks: list[str] = []
    for piece in pieces:
        chunks += splitter.push(piece)
    chunks += splitter.flush()

    assert all(c and c == c.strip() for c in chunks), "no empty or padded chunk"
    assert all(len(c) <= cfg.max_chars for c in chunks)
    assert all(any(ch.isalnum() for ch in c) for c in chunks), "every chunk has something to say"
    spoken, expected = no_space("".join(chunks)), no_space(clean_for_speech("".join(pieces)))
    # Every letter and digit, in order; only runs with nothing to say (stray punctuation) may be dropped.
    assert [ch for ch in spoken if ch.isalnum()] == [ch for ch in expected if ch.isalnum()]
    rest = iter(expected)
    assert all(ch in rest for ch in spoken), "chunks are the cleaned text, in order"


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("Hello\x00 there.", "Hello there."),
        ("Ring\x07 ring.\x1b", "Ring ring."),
        ("zero\u200bwidth\ufeff and soft\u00adhyphen.", "zerowidth and softhyphen."),
        ("tab\there\x0bthere.", "tab here there."),
    ],
)
def test_control_and_format_characters_are_not_spoken(raw: str, said: str) -> None:
    assert clean_for_speech(raw) == said
    splitter = SentenceSplitter(SentenceConfig(min_chars=1))
    assert " ".join([*splitter.push(raw), *splitter.flush()]) == said


@pytest.mark.parametrize(
    ("text", "speech"), [("Hi.", True), ("42", True), ("🎉 *** ---", False), ("\x00 \u200b", False)]
)
def test_has_speech(text: str, speech: bool) -> None:
    assert has_speech(text) is speech
