"""The `serve:` section: where the server listens, who may call it, and how much it takes on."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmsmith.core.config import ConfigError

MAX_ADAPTERS = 16  # each adapter present in a batch costs two small products per adapted layer and step


@dataclass
class ServeConfig:
    """Settings of `lmsmith serve` (and the model side of `lmsmith chat`)."""

    host: str = "127.0.0.1"  # loopback only; 0.0.0.0 to be reachable from other machines
    port: int = 8000
    api_key_file: str | None = None  # a file holding the key clients must send (Authorization: Bearer KEY)
    model_name: str | None = None  # the model id clients name (default: the model directory's name)
    template: str | None = None  # chatml | plain | raw, for a model without its own chat_template
    max_batch: int = 32  # requests decoded together; more wait in the queue
    max_queue: int = 256  # requests waiting for a slot; past this the server answers 429
    max_tokens: int | None = None  # the most new tokens one request may ask for (default: the context)
    max_n: int = 8  # the most choices (n x prompts) one request may ask for
    max_body_kb: int = 1024  # request bodies larger than this are refused
    prefill_chunk: int = 256  # prompt tokens run per turn of the decode loop, shared by new requests
    # The KV cache is a pool of blocks, allocated as requests write into them, holding at most this many tokens
    # (or this many GiB), shared by the requests in flight (a request waits until the blocks its prompt and
    # max_tokens can need fit beside the others'). Neither: at most half the free memory, and no more than
    # max_batch x the context (serve/kv_sizing.py).
    kv_cache_tokens: int | None = None
    kv_cache_gb: float | None = None
    kv_slots: bool = False  # instead, max_batch slots of the whole context each, preallocated (to compare against)
    share_prefixes: bool = True  # prompts starting with the same blocks (a system prompt) share their keys
    free_memory_gb: float | None = None  # the free memory the default KV cache is sized by (unset: measured)
    # LoRA adapters of the served model, NAME=RUN_DIR each (made by `finetune --method lora`): a request's
    # `model` picks one by NAME, the base by its own name; rows of different adapters decode in one batch
    adapters: list[str] = field(default_factory=list)
    log_text: bool = False  # log prompts and outputs (off: logs show only sizes and timings)
    device: str = "auto"  # auto | cpu | cuda | mps
    compile: bool = False  # decode through torch.compile (compiled_decode.py), compiled at start-up
    threads: int | None = None  # CPU threads for the model (default: torch's, one per core); 1 can be fastest
    # on a machine whose cores are busy with other work, where threads waiting on each other stall every step

    def check(self, where: str = "serve") -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{where}.port must be 0..65535, got {self.port}")
        for name in ("max_batch", "max_queue", "max_n", "max_body_kb", "prefill_chunk"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"{where}.threads must be at least 1 (or unset for one per core), got {self.threads}")
        if self.kv_cache_tokens is not None and self.kv_cache_tokens < 1:
            raise ConfigError(f"{where}.kv_cache_tokens must be at least 1 (or unset for a pool sized by the free "
                              f"memory), got {self.kv_cache_tokens}")
        if self.kv_slots and (self.kv_cache_tokens is not None or self.kv_cache_gb is not None):
            raise ConfigError(f"{where}.kv_slots takes no kv_cache_tokens or kv_cache_gb (slots are max_batch x "
                              "the context): give one or the other")
        if self.kv_cache_tokens is not None and self.kv_cache_gb is not None:
            raise ConfigError(f"{where}: give kv_cache_tokens or kv_cache_gb, not both")
        for name in ("kv_cache_gb", "free_memory_gb"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(f"{where}.{name} must be more than 0 (or unset), got {getattr(self, name)}")
        if len(self.adapters) > MAX_ADAPTERS:
            raise ConfigError(f"{where}.adapters: {len(self.adapters)} adapters, at most {MAX_ADAPTERS} on one "
                              "server: serve the rest from another")
        if self.adapters and self.compile:
            raise ConfigError(f"{where}.compile with adapters is not supported yet (the compiled step would be "
                              "compiled again for every mix of adapters): leave out --compile")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"{where}.max_tokens must be at least 1 (or unset for the context), "
                              f"got {self.max_tokens}")


@dataclass
class ChatConfig:
    """The `chat:` section: how `lmsmith chat` samples, and what it starts with."""

    system: str | None = None  # a system message to start the conversation with
    temperature: float = 0.7
    top_p: float | None = 0.95
    top_k: int | None = None
    max_new_tokens: int = 256  # the longest answer
    template: str | None = None  # chatml | plain | raw, for a model without its own chat_template
    seed: int | None = None
    device: str = "auto"
    compile: bool = False  # decode through torch.compile (compiled_decode.py): once, before the first answer

    def check(self, where: str = "chat") -> None:
        self.generation().check(where)

    def generation(self):
        from lmsmith.schema.generate import GenerationConfig

        return GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                                top_p=self.top_p, seed=self.seed)
