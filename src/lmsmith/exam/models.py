"""What the exam asks of a model, and the models that answer: our own, and any OpenAI-compatible server.

Two questions cover every kind of item:

- `loglikelihoods([(context, continuation), ...])`: log P(continuation | context), summed over
  the continuation's tokens (multiple choice);
- `answers([Prompt, ...])`: each prompt's answers, the first greedy and the rest (an item's
  `samples`) drawn at the exam's temperature (every generated kind).

`LocalModel` runs a model directory (or a run's final model) in this process, batched.
`ServerModel` asks a server at `http://...` (`lmsmith serve`, Ollama, vLLM, llama.cpp) through the
OpenAI API over plain HTTP: completions with echo and logprobs for log-likelihoods, completions or
chat completions for answers. `open_model` picks one from what the user wrote.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lmsmith.core.errors import UserError
from lmsmith.schema.exam import ExamConfig


@dataclass
class Prompt:
    text: str | None  # a plain prompt ...
    messages: list[dict] | None  # ... or a conversation, rendered by the model's chat template
    samples: int = 1


class ExamModel(Protocol):
    name: str

    def loglikelihoods(self, pairs: list[tuple[str, str]]) -> list[float]:
        """log P(continuation | context) of each (context, continuation)."""

    def answers(self, prompts: list[Prompt]) -> list[list[str]]:
        """Each prompt's `samples` answers: the first greedy, the others sampled."""


def open_model(name: str, config: ExamConfig) -> ExamModel:
    """A server URL, a GGUF file or a Hugging Face directory (converted on the way in), or our own model."""
    if name.startswith(("http://", "https://")):
        return ServerModel(name, config)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf" or is_hf_dir(path):
        return LocalModel(name, config, loaded=converted(path))
    return LocalModel(name, config)


def is_hf_dir(path: Path) -> bool:
    """A Hugging Face model directory: its config.json names a model_type (ours does not)."""
    try:
        return path.is_dir() and "model_type" in json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def converted(path: Path) -> tuple:
    """(model, tokenizer) of a GGUF file or a Hugging Face directory, as `lmsmith convert` makes them."""
    import tempfile

    from lmsmith.model.directory import load_model_dir

    with tempfile.TemporaryDirectory(prefix="lmsmith-exam-") as tmp:
        if path.is_file():
            from lmsmith.interop.gguf_import import import_gguf

            import_gguf(path, Path(tmp) / "model")
        else:
            from lmsmith.interop.convert import import_hf_dir

            import_hf_dir(path, Path(tmp) / "model")
        return load_model_dir(Path(tmp) / "model")


# ---------------------------------------------------------------------------------------------
# Our own model, in this process


class LocalModel:
    """A model directory or run, scored in batches on this machine's device."""

    def __init__(self, path: str | Path, config: ExamConfig, loaded: tuple | None = None):
        """`loaded`: a (model, tokenizer) already in memory (fine-tuning's, before and after), instead of `path`."""
        from lmsmith.core.device import pick_device
        from lmsmith.model.directory import load_model_dir, resolve_model_dir

        self.name = str(path)
        self.config = config
        self._chat = None
        if loaded is not None:
            self.path, (self.model, self.tokenizer) = Path(path), loaded
            self.device = next(self.model.parameters()).device
            if self.device.type == "cpu" and config.device != "cpu":
                self.device = pick_device(config.device)
                self.model.to(self.device)
            return
        self.path = resolve_model_dir(path)
        self.device = pick_device(config.device)
        self.model, self.tokenizer = load_model_dir(self.path, self.device)

    # -- log-likelihoods

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """The context's and the continuation's tokens as lm-evaluation-harness splits them: the whole text
        is encoded once (so a token may straddle the join) and the context's own token count cuts it."""
        spaces = len(context) - len(context.rstrip())
        if spaces:  # trailing spaces belong to the continuation, where a tokenizer expects them
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        head = self.tokenizer.encode(context) if context else []
        if not head:  # nothing to condition on: the end-of-text token starts the text, as for a new document
            return [self.tokenizer.eot_id], whole
        return whole[:len(head)], whole[len(head):]

    def loglikelihoods(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Continuations of one context (a question's choices) share its forward pass; the rest go whole."""
        encoded = [self.encode_pair(c, x) for c, x in pairs]
        by_context: dict[tuple, list[int]] = {}
        for i, (head, _) in enumerate(encoded):
            by_context.setdefault(tuple(head), []).append(i)
        block = self.model.config.block_size
        shared = [rows for head, rows in by_context.items()
                  if len(rows) > 1 and len(head) + max(len(encoded[i][1]) for i in rows) <= block]
        in_shared = {i for rows in shared for i in rows}
        results = [0.0] * len(encoded)
        self._score_whole(encoded, [i for i in range(len(encoded)) if i not in in_shared], results)
        self._score_shared(encoded, shared, results)
        return results

    def _score_whole(self, encoded, indices: list[int], results: list[float]) -> None:
        """Each (context, continuation) as one sequence, batched; a sequence past the context keeps its end."""
        import torch

        block = self.model.config.block_size
        # Longest first, so each batch pads little; the results go back in the order asked.
        order = sorted(indices, key=lambda i: -sum(map(len, encoded[i])))
        size = self.config.batch_size
        for first in range(0, len(order), size):
            rows = order[first:first + size]
            sequences = [(encoded[i][0] + encoded[i][1])[-(block + 1):] for i in rows]
            length = max(len(s) for s in sequences) - 1
            inputs = torch.zeros(len(rows), length, dtype=torch.long)
            for r, seq in enumerate(sequences):
                inputs[r, :len(seq) - 1] = torch.tensor(seq[:-1])
            with torch.inference_mode():
                logprobs = self.model(inputs.to(self.device)).logits.float().log_softmax(-1).cpu()
            for r, (i, seq) in enumerate(zip(rows, sequences)):
                n = min(len(encoded[i][1]), len(seq) - 1)
                targets = torch.tensor(seq[-n:])
                positions = torch.arange(len(seq) - 1 - n, len(seq) - 1)
                results[i] = float(logprobs[r, positions, targets].sum())

    def _score_shared(self, encoded, groups: list[list[int]], results: list[float]) -> None:
        """Each context once into a KV cache, the cache copied to its continuations, which then go in one pass."""
        groups = sorted(groups, key=lambda rows: -len(encoded[rows[0]][0]))
        chunk: list[list[int]] = []
        for n, rows in enumerate(groups):
            chunk.append(rows)
            last = n == len(groups) - 1
            if last or sum(map(len, chunk)) + len(groups[n + 1]) > self.config.batch_size:
                self._score_chunk(encoded, chunk, results)
                chunk = []

    def _score_chunk(self, encoded, chunk: list[list[int]], results: list[float]) -> None:
        import torch

        from lmsmith.model.decoding import left_pad
        from lmsmith.model.transformer import KVCache

        heads = [encoded[rows[0]][0] for rows in chunk]
        tails = [encoded[i][1] for rows in chunk for i in rows]
        owner = torch.tensor([g for g, rows in enumerate(chunk) for _ in rows], device=self.device)
        tokens, pad = left_pad(heads, self.device)
        param = next(self.model.parameters())
        longest_tail = max(len(t) for t in tails)
        cache = KVCache(self.model.config, len(chunk), tokens.size(1) + longest_tail, self.device, param.dtype,
                        pad=pad)
        inputs = torch.zeros(len(tails), longest_tail, dtype=torch.long)
        for r, tail in enumerate(tails):
            inputs[r, :len(tail)] = torch.tensor(tail)
        with torch.inference_mode():
            first = self.model(tokens, cache=cache, last_only=True).logits[:, -1].float().log_softmax(-1)
            cache.keys = [k[owner] for k in cache.keys]
            cache.values = [v[owner] for v in cache.values]
            cache.pad = cache.pad[owner] if cache.pad is not None else None
            rest = self.model(inputs.to(self.device), cache=cache).logits.float().log_softmax(-1)
        first, rest = first[owner].cpu(), rest.cpu()
        for r, i in enumerate(i for rows in chunk for i in rows):
            tail = torch.tensor(tails[r])
            total = first[r, tail[0]] + rest[r, torch.arange(len(tail) - 1), tail[1:]].sum()
            results[i] = float(total)

    # -- answers

    def chat_format(self):
        from lmsmith.text.chat_template import chat_format

        if self._chat is None:
            self._chat = chat_format(self.tokenizer, self.path, self.config.template)
        return self._chat

    def uses_chat(self, prompt: Prompt) -> bool:
        if prompt.messages is not None:
            return True
        if self.config.chat is None:
            return bool(self.config.template or getattr(self.tokenizer, "chat_template", None))
        return self.config.chat

    def render(self, prompt: Prompt) -> tuple[str, list[str]]:
        """The text to continue and the stop strings of one prompt."""
        if not self.uses_chat(prompt):
            return prompt.text, list(self.config.stop)
        fmt = self.chat_format()
        messages = prompt.messages or [{"role": "user", "content": prompt.text}]
        end = fmt.answer_end
        return fmt.prompt(messages), [end] if end and end != self.tokenizer.eot_token else []

    def answers(self, prompts: list[Prompt]) -> list[list[str]]:
        from lmsmith.model.decoding import generate
        from lmsmith.schema.generate import GenerationConfig

        rendered = [self.render(p) for p in prompts]
        out: list[list[str]] = [[] for _ in prompts]
        # One greedy pass over every prompt, then the extra samples; prompts that stop alike go together.
        jobs = [(i, 0.0) for i in range(len(prompts))]
        jobs += [(i, self.config.temperature) for i, p in enumerate(prompts) for _ in range(p.samples - 1)]
        groups: dict[tuple, list[int]] = {}
        for i, temperature in jobs:
            groups.setdefault((tuple(rendered[i][1]), temperature), []).append(i)
        for (stop, temperature), members in groups.items():
            config = GenerationConfig(max_new_tokens=self.config.max_new_tokens, temperature=temperature,
                                      stop=list(stop), seed=self.config.seed)
            for first in range(0, len(members), self.config.batch_size):
                chunk = members[first:first + self.config.batch_size]
                texts = generate(self.model, self.tokenizer, [rendered[i][0] for i in chunk], config)
                for i, text in zip(chunk, texts):
                    out[i].append(text)
        return out


# ---------------------------------------------------------------------------------------------
# A server that speaks OpenAI's API


class ServerModel:
    """An OpenAI-compatible server; its key, if it needs one, comes from $OPENAI_API_KEY."""

    WORKERS = 8  # requests in flight at once: a batching server answers them together

    def __init__(self, url: str, config: ExamConfig):
        self.name = url
        self.config = config
        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.key = os.environ.get("OPENAI_API_KEY")
        self.model_id = self._model_id()

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One request's JSON answer; a server that is down or answers an error is one line naming the URL."""
        import urllib.error
        import urllib.request

        url = self.base + path
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=600) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            hint = "set OPENAI_API_KEY to the server's key" if exc.code in (401, 403) else "check the server's log"
            raise UserError(f"{url} answered {exc.code} ({str(detail)[:200]}): {hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"{url}: cannot reach the server ({reason}): start it, or fix the URL") from None
        except ValueError:
            raise UserError(f"{url} did not answer JSON: is it an OpenAI-compatible server (…/v1)?") from None

    def _model_id(self) -> str:
        models = self.request("GET", "/models").get("data") or []
        if not models:
            raise UserError(f"{self.base}/models lists no model: load one into the server")
        return models[0]["id"]

    def loglikelihoods(self, pairs: list[tuple[str, str]]) -> list[float]:
        with ThreadPoolExecutor(self.WORKERS) as pool:
            return list(pool.map(lambda pair: self._loglikelihood(*pair), pairs))

    def _loglikelihood(self, context: str, continuation: str) -> float:
        # echo returns the prompt's own tokens with their log-probabilities; one new token is the least to ask.
        answer = self.request("POST", "/completions", {"model": self.model_id, "prompt": context + continuation,
                                                       "max_tokens": 1, "temperature": 0, "echo": True,
                                                       "logprobs": 0})
        choice = answer["choices"][0]["logprobs"]
        n_prompt = answer.get("usage", {}).get("prompt_tokens", len(choice["tokens"]) - 1)
        offsets, logprobs = choice["text_offset"][:n_prompt], choice["token_logprobs"][:n_prompt]
        # A token that straddles the join counts for the continuation, as the harness's split does.
        starts = [k for k, at in enumerate(offsets) if at + len(choice["tokens"][k]) > len(context)]
        return float(sum(lp for lp in logprobs[starts[0]:] if lp is not None)) if starts else 0.0

    def _answer(self, prompt: Prompt, temperature: float) -> str:
        common = {"model": self.model_id, "max_tokens": self.config.max_new_tokens, "temperature": temperature,
                  "seed": self.config.seed}
        if prompt.messages is not None or self.config.chat:
            messages = prompt.messages or [{"role": "user", "content": prompt.text}]
            answer = self.request("POST", "/chat/completions", {**common, "messages": messages})
            return answer["choices"][0]["message"]["content"] or ""
        body = {**common, "prompt": prompt.text, **({"stop": self.config.stop} if self.config.stop else {})}
        return self.request("POST", "/completions", body)["choices"][0]["text"]

    def answers(self, prompts: list[Prompt]) -> list[list[str]]:
        jobs = [(i, 0.0 if s == 0 else self.config.temperature) for i, p in enumerate(prompts)
                for s in range(p.samples)]
        with ThreadPoolExecutor(self.WORKERS) as pool:
            texts = list(pool.map(lambda job: self._answer(prompts[job[0]], job[1]), jobs))
        out: list[list[str]] = [[] for _ in prompts]
        for (i, _), text in zip(jobs, texts):
            out[i].append(text)
        return out
