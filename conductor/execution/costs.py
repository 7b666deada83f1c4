"""What a strategy can cost at most for a request: the amount admission reserves."""

from __future__ import annotations

from conductor.config import BatchStrategy, Settings, VerifiedStrategy
from conductor.evaluators.judge import JUDGE_MAX_TOKENS, JUDGE_PROMPT_TOKENS_BOUND
from conductor.providers.batching import BATCH_FRAMING_OUT_TOKENS, batch_framing_tokens
from conductor.types import CompletionRequest, estimate_prompt_tokens


def cost_upper_bound(settings: Settings, strategy: str, request: CompletionRequest) -> float:
    """The most a strategy can cost for a request: input tokens + max_tokens (or the task
    type's max_output_tokens) at its prices; batch: plus the batch's framing, all of it
    charged to an item that goes alone; verified: draft + judge + escalation."""
    tt = settings.task_types[request.task_type]
    out = request.max_tokens or tt.max_output_tokens
    n_in = estimate_prompt_tokens(request.chat_messages())

    def one(name: str) -> float:
        st = settings.strategies[name]
        n_out = min(out, st.max_tokens) if st.max_tokens else out
        if isinstance(st, BatchStrategy):
            return settings.model_of(name).cost_usd(
                n_in + batch_framing_tokens(st.batch.max_batch),
                n_out + BATCH_FRAMING_OUT_TOKENS) * st.batch_discount
        return settings.model_of(name).cost_usd(n_in, n_out) * st.batch_discount

    st = settings.strategies[strategy]
    if not isinstance(st, VerifiedStrategy):
        return one(strategy)
    judge = 0.0
    if settings.judge.strategy:
        judge = settings.model_of(settings.judge.strategy).cost_usd(
            n_in + out + JUDGE_PROMPT_TOKENS_BOUND, JUDGE_MAX_TOKENS)
    return one(st.verified.draft) + judge + one(st.verified.escalate_to)
