"""HangUpFilter: the character's end-of-call marker is cut from the streamed text, however it is split."""

from __future__ import annotations

import pytest

from cloud_server.pipeline.hang_up import HangUpFilter


def run(pieces: list[str], marker: str = "[END CALL]") -> tuple[str, bool]:
    cut = HangUpFilter(marker)
    text = "".join(cut.push(p) for p in pieces) + cut.flush()
    return text, cut.found


@pytest.mark.parametrize(
    "pieces",
    [
        ["Goodbye now. [END CALL]"],
        ["Goodbye now. [", "END", " CALL", "]"],
        ["Goodbye now. [end", " call] and then", " more words"],
        ["Goodbye now.", " [END CALL", "]", " Extra."],
    ],
)
def test_the_marker_ends_the_reply_wherever_the_tokens_split_it(pieces: list[str]) -> None:
    text, found = run(pieces)
    assert found and text.strip() == "Goodbye now."


def test_text_that_only_looks_like_the_start_of_the_marker_is_spoken_as_written() -> None:
    assert run(["See [", "ENDless", " fun] here."]) == ("See [ENDless fun] here.", False)
    assert run(["Bye [EN"]) == ("Bye [EN", False)  # the LLM stopped mid-way: what was held is spoken
    assert run(["Goodbye [END CALL]"], marker="") == ("Goodbye [END CALL]", False)  # hanging up disabled
