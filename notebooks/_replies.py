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
