"""Scripted DeepInfra replies that the notebook cassettes are synthesized from, one list per notebook.

``python -m guidance_deepinfra.notebook --synthesize`` runs each notebook against the loopback fake server,
which answers its requests with these replies in order, and records the traffic to
``cassettes/notebooks/<name>.yaml``. Keep each list in the order the notebook sends its requests.
"""

from __future__ import annotations

from guidance_deepinfra.testing import Reply

REPLIES: dict[str, list[Reply]] = {
    "quickstart": [
        Reply.text(
            "A guidance program mixes fixed text with generated text, so the model fills in only the parts you "
            "leave open.",
            prompt_tokens=34,
            completion_tokens=24,
        ),
        Reply.text("1. Apple\n2. Banana\n3. Cherry", prompt_tokens=29, completion_tokens=11),
        Reply.text("Paris.", prompt_tokens=31, completion_tokens=2),
        Reply.text(
            "Morning light on snow\nthe kettle starts its whisper\ncold hands round the cup",
            chunk_size=12,
            prompt_tokens=25,
            completion_tokens=19,
        ),
    ],
}

REPLIES["json_extraction"] = [
    Reply.text(
        '{"title": "Budget review", "day": "Thursday", "start": "14:30", '
        '"attendees": ["Sam", "Priya", "Tom", "Lena"], "online": false}',
        prompt_tokens=96,
        completion_tokens=38,
    ),
    Reply.text(
        '{"title": "Quick sync", "day": "Monday", "start": "9:00", "attendees": ["Ana"]}',
        prompt_tokens=82,
        completion_tokens=27,
    ),
    Reply.text(
        '{"title": "Quick sync", "day": "Monday", "start": "9:00", "attendees": ["Ana"], "online": true}',
        prompt_tokens=151,
        completion_tokens=31,
    ),
    # A reasoning model thinking inline before its answer (as DeepSeek-R1 does), then the same model with
    # its reasoning turned off for one block.
    Reply.text(
        '{"title": "Budget review", "day": "Thursday", "start": "14:30", '
        '"attendees": ["Sam", "Priya", "Tom", "Lena"], "online": true}',
        reasoning="The email moves the budget review to Thursday at 14:30. Sam signs it, Priya and Tom join "
        "from the office, Lena dials in, so the meeting is partly online.",
        reasoning_as="inline",
        prompt_tokens=96,
    ),
    Reply.text('"yes"', prompt_tokens=160, completion_tokens=2),
]

REPLIES["classification"] = [
    Reply.text('"billing"', prompt_tokens=48, completion_tokens=3),
    Reply.text('"bug"', prompt_tokens=51, completion_tokens=2),
    Reply.text('"feature request"', prompt_tokens=49, completion_tokens=4),
    Reply.text('"bug"', prompt_tokens=44, completion_tokens=2),
    Reply.text(
        "Being logged out repeatedly after an update is a defect, not a request or a billing issue.",
        prompt_tokens=53,
        completion_tokens=19,
    ),
]


# Batch extraction sends its requests concurrently, so they are answered by review text, not in order.
REVIEWS: dict[str, tuple[str, int, str]] = {
    # review text: (product, rating, sentiment)
    "The kettle boils fast and looks great on the counter.": ("kettle", 5, "positive"),
    "Headphones broke after two weeks. Sound was fine until then.": ("headphones", 2, "mixed"),
    "This desk lamp flickers constantly. Returning it.": ("desk lamp", 1, "negative"),
    "Comfortable office chair, though assembly took an hour.": ("office chair", 4, "mixed"),
    "Ten out of five! Best toaster I have ever owned!": ("toaster", 10, "positive"),
    "The blender is loud but crushes ice perfectly.": ("blender", 4, "mixed"),
    "Umbrella turned inside out in the first gust.": ("umbrella", 1, "negative"),
    "These running shoes fit perfectly from day one.": ("running shoes", 5, "positive"),
    "The backpack zipper jammed on the first trip.": ("backpack", 2, "negative"),
    "Great coffee grinder, very consistent grind size.": ("coffee grinder", 5, "positive"),
    "The phone case is fine. Nothing special.": ("phone case", 3, "mixed"),
    "Water bottle keeps drinks cold all day, love it.": ("water bottle", 5, "positive"),
    "The air fryer works, but the basket is hard to clean.": ("air fryer", 3, "mixed"),
    "Monitor arrived with a dead pixel in the centre.": ("monitor", 1, "negative"),
}


def review_reply(body: dict) -> Reply:
    """The extraction answer for the review in the request's user message (a rating of 10 breaks the schema)."""
    import json

    text = next(m["content"] for m in body["messages"] if m["role"] == "user")
    product, rating, sentiment = REVIEWS[text]
    answer = {"product": product, "rating": rating, "sentiment": sentiment}
    return Reply.text(json.dumps(answer), prompt_tokens=64 + len(text) // 4, completion_tokens=18)


REPLIES["batch_extraction"] = review_reply

REPLIES["regex_and_grammars"] = [
    # gen(regex=...) on a regular pattern goes to the server as a JSON Schema string pattern: a JSON string.
    Reply.text('"1969-07-20"', prompt_tokens=34, completion_tokens=7),
    # Two regex captures in one grammar, with prose after the match that is cut off.
    Reply.text('"Grace, age 85. She wrote the first compiler."', prompt_tokens=38, completion_tokens=13),
    # A Lark grammar: the answer goes wrong midway, the accepted prefix is continued.
    Reply.text("(3+4)x12", prompt_tokens=41, completion_tokens=5),
    Reply.text("*12", prompt_tokens=47, completion_tokens=2),
    # Attempts run out: neither answer is an expression.
    Reply.text("I would rather explain it in words.", prompt_tokens=41, completion_tokens=9),
    Reply.text("Three plus four, times twelve.", prompt_tokens=112, completion_tokens=8),
]

# The classification notebook's confidence cells: these replies carry scripted token logprobs (synthesized
# numbers, not a model's). The fake server sends them only when the request asks for logprobs, with at most
# the request's top_logprobs alternatives.
REPLIES["classification"] += [
    # A clear billing ticket: the model is sure.
    Reply.text(
        '"billing"',
        token_logprobs=[
            ('"', -0.001),
            ("billing", -0.05, {"billing": -0.05, "other": -3.9, "bug": -4.6}),
            ('"', -0.0001),
        ],
        prompt_tokens=48,
    ),
    Reply.text(
        '"bug"',
        token_logprobs=[('"', -0.001), ("bug", -0.08, {"bug": -0.08, "feature": -2.9, "other": -4.1}), ('"', 0.0)],
        prompt_tokens=51,
    ),
    # A ticket the model is torn about, between billing and bug.
    Reply.text(
        '"billing"',
        token_logprobs=[
            ('"', -0.002),
            ("billing", -0.6, {"billing": -0.6, "bug": -1.1, "other": -2.6, "feature": -3.4}),
            ('"', -0.001),
        ],
        prompt_tokens=57,
    ),
    # Exact scoring of that ticket by continuation: the first token after the opening quote, then the one
    # option whose first token does not finish it ("feature request").
    Reply.text(
        'billing"',
        token_logprobs=[('billing"', -0.62, {'billing"': -0.62, 'bug"': -1.05, "feature": -3.5, 'other"': -2.7})],
        prompt_tokens=60,
    ),
    Reply.text(' request"', token_logprobs=[(' request"', -0.01, {' request"': -0.01})], prompt_tokens=61),
]
