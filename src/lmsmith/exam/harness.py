"""Any exam model as lm-evaluation-harness's LM: its own tasks (hellaswag, arc_easy, ...) run on our models.

    from lm_eval import simple_evaluate
    simple_evaluate(model=harness_lm(open_model("runs/main", ExamConfig())), tasks=["arc_easy"])

The harness asks three questions, answered by the same two the exam asks:

- loglikelihood(context, continuation) -> (log-likelihood, is it the greedy continuation);
- loglikelihood_rolling(text): the log-likelihood of a whole text from the start of a document;
- generate_until(context, until, max_gen_toks): a greedy (or sampled) answer cut at the stop strings.

`is_greedy` is reported False: the exam's interface gives log-likelihoods, not each position's
argmax; the harness only uses it for the `acc` of loglikelihood (not multiple-choice) tasks.
A rolling text longer than a local model's context is scored on its last context's worth of tokens.
"""

from __future__ import annotations

import dataclasses

from lmsmith.core.extras import require
from lmsmith.exam.models import ExamModel, Prompt


def harness_lm(model: ExamModel):
    """An instance of the harness's LM class answering through `model`."""
    api = require("lm_eval.api.model", extra="dev", package="lm-eval", purpose="running lm-evaluation-harness tasks")

    class ExamLM(api.LM):
        def __init__(self):
            super().__init__()
            self.model = model

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            lls = self.model.loglikelihoods([tuple(r.args[:2]) for r in requests])
            return [(ll, False) for ll in lls]

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return self.model.loglikelihoods([("", r.args[0]) for r in requests])

        def generate_until(self, requests, disable_tqdm: bool = False):
            answers = []
            before = self.model.config
            try:
                for request in requests:
                    context, settings = request.args[0], dict(request.args[1] or {})
                    until = settings.get("until") or []
                    self.model.config = dataclasses.replace(
                        before, stop=[until] if isinstance(until, str) else list(until), chat=False,
                        max_new_tokens=int(settings.get("max_gen_toks", before.max_new_tokens)))
                    answers.append(self.model.answers([Prompt(context, None)])[0][0])
            finally:
                self.model.config = before
            return answers

    return ExamLM()
