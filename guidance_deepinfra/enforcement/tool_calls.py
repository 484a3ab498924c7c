"""Tool calls whose arguments are checked against the tools' schemas, through the one attempt loop.

A local model writes a tool call under its tool's grammar; on DeepInfra the arguments are whatever the model
wrote. A model turn with tool calls is therefore read whole, each call is checked (`lowering.tool_args`),
and only a turn whose every call fits is written into the program, where its tools run. A turn with a bad
call is shown back to the model with what was wrong, as any refused answer is, by `AttemptLoop` within the
constraint bounds; when they run out, `ToolArgumentsError` says so and no tool has run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from typing import Any

from guidance._ast import ToolCallNode
from guidance.trace import OutputAttr
from openai.types.chat import ChatCompletionChunk

from ..bounds import current_limits
from ..errors import Attempt, ConstraintError, InvalidParameterError, ToolArgumentsError, UnsupportedFeatureError
from ..interpreter.base import DeepInfraBaseInterpreter, tool_spec
from ..lowering import tool_args
from ..lowering.schema import PreparedSchema
from .attempts import AttemptLoop, Stop, run_attempts

Turn = list[ChatCompletionChunk]


class ToolCallAttempts:
    """The `AttemptStrategy` of a turn's tool calls: answers are whole streamed turns, the accepted value is
    the turn whose every call fits its tool's schema."""

    error_type: type[ConstraintError] = ToolArgumentsError

    def __init__(
        self, build_body: Callable[[list[dict[str, Any]]], dict[str, Any]], schemas: dict[str, PreparedSchema]
    ):
        self.attempts: list[Attempt] = []
        self.schemas = schemas
        self._build_body = build_body
        self._feedback: list[dict[str, Any]] = []  # the refused turn and what was wrong, as tool results

    def kind(self) -> str:
        return "tool_arguments"

    def describe(self) -> str:
        return "tool arguments: " + ", ".join(sorted(self.schemas))

    def next_request(self, remaining_tokens: int | None) -> dict[str, Any]:
        del remaining_tokens  # a tool call's length is the model's; the budget is checked between turns
        return self._build_body(self._feedback)

    def judge(self, turn: Turn) -> tuple[Turn | None, bool]:
        calls = tool_args.assemble_calls(turn)
        errors = [tool_args.call_errors(call, self.schemas) for call in calls]
        if not any(errors):
            return turn, False
        content = "".join(chunk.choices[0].delta.content or "" for chunk in turn if chunk.choices)
        shown = json.dumps([{"name": call.name, "arguments": call.arguments} for call in calls])
        reasons = tuple(f"{call.name}: {reason}" for call, found in zip(calls, errors, strict=True) for reason in found)
        self.attempts.append(Attempt(text=shown, errors=reasons, strategy="tool_call"))
        self._feedback = tool_args.feedback_messages(calls, errors, content)
        return None, False

    def format_refused(self, exc: UnsupportedFeatureError | InvalidParameterError) -> bool:
        del exc
        return False  # a model that refuses tools has no other form to take them in

    def failure(self, stop: Stop) -> str:
        return (
            f"the model's tool call arguments did not fit the tools' schemas in {stop.answers} attempt(s); "
            "no tool was run with them; last errors: " + "; ".join(self.attempts[-1].errors[:3])
        )


class ToolCallMixin(DeepInfraBaseInterpreter):
    """Tool calls on DeepInfra: the tools sent as the request's ``tools``, each turn checked before any runs."""

    def tool_call(self, node: ToolCallNode, **kwargs: Any) -> Iterator[OutputAttr]:
        self._check_can_generate()
        if not self.profile.tools:
            raise UnsupportedFeatureError(
                f"Tool calling is not supported for model: {self.model}", feature="tools", model=self.model
            )
        tools = [tool_spec(name, tool) for name, tool in node.tools.items()]
        base = self.request_messages()

        def build_body(feedback: list[dict[str, Any]]) -> dict[str, Any]:
            return self.build_body(
                messages=base + feedback,
                sampling_params=kwargs.get("sampling_params"),
                tools=tools,
                tool_choice=node.tool_choice,
            )

        bounds = current_limits(self.max_attempts)
        loop: AttemptLoop[Turn, Turn] = AttemptLoop(
            ToolCallAttempts(build_body, tool_args.tool_schemas(node.tools)),
            usage=self.state.usage,
            max_attempts=bounds.max_attempts or 1,
            token_budget=bounds.token_budget,
            model=self.model,
        )
        turn = yield from run_attempts(loop, self._whole_turn, self.attempt_labels(None))
        yield from self._handle_stream(iter(turn), tool_args.guarded(node.tools))

    def _whole_turn(self, body: dict[str, Any]) -> Generator[OutputAttr, None, Turn]:
        """One request's turn, read whole before anything is written: no tool may run on unchecked arguments."""
        with ExitStack() as stack:
            turn = list(self.tap(self.open_stream(body, stack), body=body))
        return turn
        yield  # a generator that writes nothing
