"""`lmsmith serve`: load a model, start the engine, and listen.

The socket is bound here, before uvicorn starts, so a port already in use (or a host that is
not ours) is one clear line and exit code 2 instead of a log of tracebacks. On SIGTERM or
Ctrl-C uvicorn stops taking connections and lets the requests in flight finish; then the
engine finishes its own queue and stops.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import sys
import time
from pathlib import Path

from lmsmith.core.errors import UserError

log = logging.getLogger("lmsmith.serve")


def read_api_key(key: str | None, key_file: str | None) -> str | None:
    """The key from --api-key, or the first line of --api-key-file (a file keeps it out of `ps` and shell history)."""
    if key is not None and key_file is not None:
        raise UserError("give --api-key or --api-key-file, not both")
    if key_file is not None:
        path = Path(key_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UserError(f"cannot read the API key file {path} ({exc.strerror or exc}): check the path") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise UserError(f"the API key file {path} is empty: put the key on its first line")
    if key is not None and not key.strip():
        raise UserError("--api-key is empty: give a key, or leave it out to serve without one")
    return key.strip() if key is not None else None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one UserError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on host {host!r} ({exc.strerror}): "
                        "give an IP address such as 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use: stop what is using it, or choose "
                            "another with --port") from None
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): "
                        "choose another --host or --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def load_served_model(model_path: str | Path, cfg, api_key: str | None = None):
    """The model, its engine (started) and everything the HTTP layer needs."""
    from lmsmith.core.device import pick_device
    from lmsmith.model.decoding import lay_out_for_decoding
    from lmsmith.model.directory import load_model_dir, resolve_model_dir
    from lmsmith.serve.adapters import attach_adapters, parse_adapter_specs
    from lmsmith.serve.api import ServedModel
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.protocol import Limits

    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    path = resolve_model_dir(model_path)
    name = cfg.model_name or default_model_name(Path(model_path))
    named = parse_adapter_specs(cfg.adapters, name)  # a mistyped --adapter fails before the model loads
    model, tokenizer = load_model_dir(path, pick_device(cfg.device))
    routing, adapters = attach_adapters(model, named, tokenizer)  # before any layout change: it hashes the weights
    lay_out_for_decoding(model)
    chat, no_chat = chat_or_reason(tokenizer, path, cfg.template)
    context = model.config.block_size
    kv = kv_cache_plan(model, cfg)
    print(kv.describe(), file=sys.stderr, flush=True)
    limits = Limits(context=context, max_tokens=min(cfg.max_tokens or context, context), max_n=cfg.max_n,
                    kv_cache_tokens=kv.pool_tokens)
    engine = Engine(model, tokenizer.vocab_size, max_batch=cfg.max_batch, max_queue=cfg.max_queue,
                    prefill_chunk=cfg.prefill_chunk, compile=cfg.compile, kv_cache_tokens=kv.pool_tokens,
                    routing=routing if adapters else None, share_prefixes=cfg.share_prefixes)
    if cfg.compile:  # before the port answers, so no request waits on a compilation
        log.info("compiling the decode step (--compile): tens of seconds the first time")
        log.info("compiled the decode step in %.1f s", engine.warm_up())
    engine.start()
    return ServedModel(name=name, engine=engine, tokenizer=tokenizer, limits=limits, chat=chat, no_chat_reason=no_chat,
                       api_key=api_key, max_body_bytes=cfg.max_body_kb * 1024, log_text=cfg.log_text,
                       created=int(time.time()), adapters=adapter_routes(adapters, cfg.template))


def kv_cache_plan(model, cfg):
    """The KV cache's kind and size, from the flags, or the memory free now (serve.free_memory_gb, if given)."""
    from lmsmith.core.free_memory import available_memory
    from lmsmith.serve.kv_sizing import GiB, plan_kv_cache

    param = next(model.parameters())
    free = cfg.free_memory_gb * GiB if cfg.free_memory_gb is not None else available_memory(param.device)
    return plan_kv_cache(model.config, param.dtype, cfg.max_batch, cfg.kv_cache_tokens, cfg.kv_cache_gb, free,
                         slots=cfg.kv_slots)


def chat_or_reason(tokenizer, where, template: str | None):
    """(the chat format, "") of a model or adapter, or (None, why it cannot chat)."""
    from lmsmith.text.chat_template import chat_format

    try:
        return chat_format(tokenizer, where, template), ""
    except UserError as exc:
        return None, str(exc)


def adapter_routes(adapters, template: str | None) -> dict:
    """Each adapter as a model a request may name, chatting in its own template (fine-tuning may have set one)."""
    from lmsmith.serve.api import ModelRoute

    return {a.name: ModelRoute(a.name, a.index, *chat_or_reason(a.adapter.tokenizer, a.path, template))
            for a in adapters}


def default_model_name(path: Path) -> str:
    """The name clients use: the run's name for runs/NAME/model (or runs/NAME), else the directory's."""
    path = path.resolve()
    return path.parent.name if path.name == "model" else path.name


def configure_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("lmsmith.serve")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def run(config, inputs: dict, out=None, *, quiet: bool = False, api_key: str | None = None) -> None:
    """The serve stage: serve the model in `inputs["model"]` until SIGTERM or Ctrl-C."""
    try:
        import uvicorn

        from lmsmith.serve.api import create_app
    except ImportError as exc:
        raise UserError(f"lmsmith serve needs {exc.name}: pip install 'lmsmith[serve]'") from None

    cfg = config.serve
    key = read_api_key(api_key, cfg.api_key_file)
    sock = bind(cfg.host, cfg.port)  # before loading: a busy port fails in a second, not after the model loads
    configure_logging(quiet)
    # The engine's thread and the HTTP event loop share the GIL; Python hands it over every 5 ms by
    # default, which a streamed token (and a new request's first one) would wait for. 1 ms keeps
    # the loop responsive at a small cost to the engine.
    sys.setswitchinterval(0.001)
    try:
        served = load_served_model(inputs["model"], cfg, key)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    app = create_app(served)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=None,
                                           lifespan="off"))
    shown = f"[{host}]" if ":" in host else host
    where = f"http://{shown}:{port}/v1"
    for route in served.adapters.values():
        print(f"adapter {route.name} of {served.name}: name it as the model to use it", file=sys.stderr)
    print(f"serving {served.name} on {where} (batch {cfg.max_batch}, context {served.limits.context}"
          f"{', API key required' if key else ''}{'' if served.chat else ', completions only: no chat template'})",
          file=sys.stderr, flush=True)
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and key is None:
        log.warning("listening on %s without an API key: anyone who can reach this port can use the model", cfg.host)
    received = []
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then raises the signal again for the handler it
    # found; with this one in place that ends in a clean exit (code 0), after the engine has stopped.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: received.append(number))
    try:
        server.run(sockets=[sock])
    finally:
        served.engine.stop()
        with contextlib.suppress(OSError):
            sock.close()
    why = f" ({signal.Signals(received[0]).name})" if received else ""
    print(f"server stopped{why}: every request in flight was answered", file=sys.stderr)
