"""`ReasoningSplit`: the one place a reply's reasoning is told from its answer, fed in any pieces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guidance_deepinfra.interpreter.reasoning import ReasoningSplit, whole_answer


def streamed(text: str, size: int, *, closing_only: bool = False) -> tuple[list[str], ReasoningSplit]:
    split = ReasoningSplit(closing_only=closing_only)
    out = [split.feed(text[i : i + size]) for i in range(0, len(text), size)]
    out.append(split.finish())
    return out, split


CASES = [
    # (content, closing_only, answer, reasoning, source)
    ("<think>hmm</think>\n\nParis.", False, "Paris.", "hmm", "inline"),
    ("  \n<think>a<b</think>x <think>y", False, "x <think>y", "a<b", "inline"),
    ("plain text <think>not reasoning</think>", False, "plain text <think>not reasoning</think>", "", None),
    ("<thi", False, "<thi", "", None),
    ("reason</think>\n answer", False, "reason</think>\n answer", "", None),
    ("reason</think>\n answer", True, "answer", "reason", "closing"),
    ("no closing tag at all", True, "no closing tag at all", "", None),
    ("<think>r</think>", False, "", "r", "inline"),
]


@pytest.mark.parametrize(("content", "closing_only", "answer", "reasoning", "source"), CASES)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_the_split_is_the_same_whatever_the_pieces(content, closing_only, answer, reasoning, source, size) -> None:
    out, split = streamed(content, size, closing_only=closing_only)
    assert "".join(out) == answer
    assert (split.reasoning, split.source, split.unclosed) == (reasoning, source, False)
    assert content[split.answer_at :] == answer or not answer


def test_the_answer_streams_once_the_reasoning_is_closed() -> None:
    out, _ = streamed("<think>hmm</think>\n\nParis is nice.", 3)
    # nothing comes out before the closing tag and its whitespace; after it, every piece as it arrives
    first = next(i for i, piece in enumerate(out) if piece)
    assert "".join(out[:first]) == "" and all(out[first:-2])


def test_an_opening_tag_that_never_closes_is_reported_and_gives_no_answer() -> None:
    out, split = streamed("<think>still going", 4)
    assert "".join(out) == "" and split.unclosed and split.reasoning == "still going"
    assert split.spent_reasoning("length") and not split.spent_reasoning("stop")


def test_field_reasoning_drops_the_whitespace_that_starts_the_answer() -> None:
    answer, split = whole_answer("\n\n42", "six times seven")
    assert answer == "42" and split.reasoning == "six times seven" and split.source == "field"
    assert split.answer_at == 2
    empty, split = whole_answer("", "all budget spent")
    assert empty == "" and split.spent_reasoning("length")


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    reasoning=st.text(alphabet="ab<>/thinkTH \n", max_size=30).filter(lambda r: "</think>" not in r),
    answer=st.text(alphabet="ab<>/think \n", max_size=30),
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=12),
)
def test_any_pieces_give_the_whole_reply_split(reasoning: str, answer: str, sizes: list[int]) -> None:
    content = f"<think>{reasoning}</think>{answer}"
    split = ReasoningSplit()
    out, at, i = [], 0, 0
    while at < len(content):
        size = sizes[i % len(sizes)]
        out.append(split.feed(content[at : at + size]))
        at, i = at + size, i + 1
    out.append(split.finish())
    assert "".join(out) == answer.lstrip()
    assert split.reasoning == reasoning
