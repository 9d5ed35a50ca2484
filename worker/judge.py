"""The LLM judge: a pydantic-ai agent that reads a trajectory and says whether its answer is right.

It sees what a careful reviewer needs: the question, every tool call with the real result it got
(cut at `max_result_chars`), and the final answer; with a rubric, what a passing answer must do.
It answers through pydantic-ai's structured output (`JudgeOutput`: an output tool the model calls
with `passed`, `score` and `reason`), so a verdict is a validated object, never parsed prose.

The judge is one more OpenAI-compatible endpoint: every request holds a slot of the pool it was
seated by (worker/pool.py), so it shares a teacher's global caps, leases and breaker.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError, UnexpectedModelBehavior
from pydantic_ai.settings import ModelSettings

from distill.shared.records import Conversation
from distill.shared.settings import JudgeConfig
from distill.shared.verdicts import MAX_DETAIL_CHARS, Verdict
from distill.worker.agent import TeacherClient, classify_failure, short_text, teacher_client
from distill.worker.teacher_http import Exchanges, Slot, current_exchanges

INSTRUCTIONS = """\
You review the work of an AI assistant that answered a question about a code base by calling tools.
The tool results shown are the real outputs of running those tools. Decide whether the assistant's
final answer is correct and answers the question, judged against the tool results: an answer that
the results contradict, that invents files or names the results do not show, or that does not
answer what was asked, fails. Give passed (true or false), a score from 0 (wrong) to 1 (fully
correct and well supported), and a one or two sentence reason."""


class JudgeOutput(BaseModel):
    """What the judge must return (pydantic-ai requests it as an output tool)."""

    passed: bool = Field(description="true if the final answer is correct and answers the question")
    score: float = Field(ge=0.0, le=1.0, description="0 = wrong, 1 = fully correct and supported by the tool results")
    reason: str = Field(description="one or two sentences saying why")


class JudgeUnavailable(Exception):
    """The judge's endpoint failed (connection, timeout, 5xx, 429); `retry_after_s` from a 429."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


def transcript(conversation: Conversation, max_result_chars: int) -> str:
    """The trajectory as the judge reads it: question, each call with its real result, the answer."""
    lines = [f"QUESTION:\n{conversation.prompt}", ""]
    calls = {call.id: call for message in conversation.messages for call in message.tool_calls or []}
    step = 0
    for message in conversation.messages:
        if message.role != "tool":
            continue
        step += 1
        call = calls.get(message.tool_call_id or "")
        name = call.function.name if call else message.name or "tool"
        arguments = json.dumps(call.function.arguments, ensure_ascii=False) if call else "{}"
        result = message.content or ""
        if len(result) > max_result_chars:
            result = result[:max_result_chars] + f"\n[... {len(result) - max_result_chars} more characters]"
        lines += [f"TOOL CALL {step}: {name}({arguments})", f"RESULT {step}:\n{result}", ""]
    if step == 0:
        lines += ["(the assistant called no tools)", ""]
    lines.append(f"FINAL ANSWER:\n{conversation.final_answer}")
    return "\n".join(lines)


class Judge:
    """One judge endpoint's agent and client, built once and reused for every verdict."""

    def __init__(self, config: JudgeConfig, rubric: str | None = None) -> None:
        self.config = config
        self.rubric = rubric
        self.client: TeacherClient = teacher_client(config)
        instructions = INSTRUCTIONS + (f"\n\nRUBRIC (a passing answer must also meet it):\n{rubric}" if rubric else "")
        self.agent: Agent[None, JudgeOutput] = Agent(None, output_type=JudgeOutput, instructions=instructions, retries=2)
        self.settings = ModelSettings(max_tokens=config.max_tokens)
        if config.temperature is not None:
            self.settings["temperature"] = config.temperature
        if config.extra_body:
            self.settings["extra_body"] = config.extra_body

    async def verdict(self, conversation: Conversation, slot: Slot | None = None) -> Verdict:
        """The judge's verdict on one conversation; `slot` is held around each request.

        A conversation without a final answer fails without asking. Raises JudgeUnavailable when the
        endpoint fails; a judge that never returns a valid verdict gives an unverified one saying so.
        """
        if conversation.final_answer is None:
            return Verdict(passed=False, detail="no final answer to judge")
        context = current_exchanges.set(Exchanges(slot))
        try:
            result = await self.agent.run(transcript(conversation, self.config.max_result_chars),
                                          model=self.client.model, model_settings=self.settings)
        except UnexpectedModelBehavior as misbehaviour:
            return Verdict(detail=f"the judge gave no valid verdict: {short_text(misbehaviour, 300)}")
        except ModelAPIError as failure:
            classified = classify_failure(failure, [], 0)
            if not classified.retryable:
                return Verdict(detail=f"the judge refused the request: {classified.reason}"[:MAX_DETAIL_CHARS])
            raise JudgeUnavailable(classified.reason, classified.retry_after_s) from None
        finally:
            current_exchanges.reset(context)
        output = result.output
        return Verdict(passed=output.passed, method="judge", score=output.score,
                       detail=" ".join(output.reason.split())[:MAX_DETAIL_CHARS])

    async def aclose(self) -> None:
        await self.client.aclose()
