"""GRPO rewards as plain functions, `f(completions, **kwargs) -> list[float | None]`, as TRL takes them.

Dataset columns arrive as keyword arguments: `gold` holds each prompt's gold label name.
- label_reward: 1.0 when the response's label equals the gold label, else 0.0 (TaoSR1's reward);
- format_reward: 0.0 for a response whose label parses, -1.0 for one that does not, so a
  malformed answer scores below a wrong but well-formed one.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from taosr1.core.labels import LabelScheme
from taosr1.core.prompts import parse_response

Reward = Callable[..., list]


def _text(completion: Any) -> str:
    # TRL passes strings for text prompts, and message lists for conversational ones.
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def make_rewards(scheme: LabelScheme, fmt: str = "post_cot") -> list[Reward]:
    """[label_reward, format_reward] for one label scheme and response format."""

    def label_reward(completions: Sequence[Any], gold: Sequence[str], **kwargs: Any) -> list[float | None]:
        out: list[float | None] = []
        for c, g in zip(completions, gold):
            want = scheme.parse(g)
            if want is None:
                out.append(None)  # no gold label: not applicable
                continue
            got = parse_response(_text(c), scheme, fmt).label
            out.append(1.0 if got == want else 0.0)
        return out

    def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return [0.0 if parse_response(_text(c), scheme, fmt).label is not None else -1.0 for c in completions]

    return [label_reward, format_reward]
