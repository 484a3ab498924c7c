"""jsonschema is loaded on the first schema checked, and its IRI grammar on the first IRI checked.

Each case runs in a fresh interpreter, since what a process has imported is the thing measured: the
package's import must not load jsonschema, a schema with ``email`` and ``date`` formats must still be
refused when broken (over the real SDK, on the fake server) without building rfc3987_syntax's grammar, and
an ``iri`` must still be checked once that grammar is built on demand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

GRAMMAR = "rfc3987_syntax.syntax_helpers"


def run_fresh(code: str) -> dict:
    """Run `code` in a new interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_formats_are_checked_without_loading_jsonschema_at_import() -> None:
    seen = run_fresh(
        f"""
        import json, sys
        from guidance import assistant, user
        import guidance_deepinfra
        from guidance_deepinfra.testing import FakeDeepInfra, Reply

        at_import = "jsonschema" in sys.modules
        schema = {{
            "type": "object",
            "properties": {{"e": {{"type": "string", "format": "email"}}, "d": {{"type": "string", "format": "date"}}}},
            "required": ["e", "d"],
        }}
        bad = json.dumps({{"e": "ada at example", "d": "2024-13-45"}})
        good = json.dumps({{"e": "ada@example.com", "d": "2024-01-02"}})
        with FakeDeepInfra() as fake:
            fake.push(Reply.text(bad), Reply.text(good))
            lm = guidance_deepinfra.DeepInfra("test/model", api_key="sk-test", base_url=fake.base_url, echo=False)
            with user():
                lm += "Who and when?"
            with assistant():
                lm += guidance_deepinfra.json("v", schema=schema)
            feedback = json.dumps(fake.requests[1]["messages"])
        print(json.dumps({{
            "at_import": at_import,
            "capture": json.loads(lm["v"]),
            "requests": len(fake.requests),
            "refused": "is not a 'email'" in feedback and "is not a 'date'" in feedback,
            "grammar": "{GRAMMAR}" in sys.modules,
        }}))
        """
    )
    assert seen["at_import"] is False
    assert seen["capture"] == {"e": "ada@example.com", "d": "2024-01-02"}
    assert seen["requests"] == 2 and seen["refused"]
    assert seen["grammar"] is False


def test_an_iri_is_checked_once_its_grammar_is_built_on_demand() -> None:
    seen = run_fresh(
        f"""
        import json, sys
        from guidance_deepinfra.lowering.schema import prepare

        prepared = prepare({{"type": "string", "format": "iri"}})
        before = "{GRAMMAR}" in sys.modules
        bad = prepared.errors("http://exa mple.com/")
        good = prepared.errors("http://例え.jp/パス")
        import rfc3987_syntax
        print(json.dumps({{
            "before": before,
            "bad": bad,
            "good": good,
            "after": "{GRAMMAR}" in sys.modules,
            "real_module": rfc3987_syntax.__file__ is not None,
        }}))
        """
    )
    assert seen["before"] is False
    assert seen["bad"] == ["at $: 'http://exa mple.com/' is not a 'iri'"] and seen["good"] == []
    assert seen["after"] is True and seen["real_module"] is True
