"""The command line: one verb per stage. Each verb parses its arguments and calls the stage.

Every `UserError` becomes one line on stderr and exit code 2; nothing else is caught, so a
bug keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from lmsmith import __version__
from lmsmith.errors import UserError


# ---------------------------------------------------------------------------------------------
# tokenizer


def add_tokenizer(sub) -> None:
    p = sub.add_parser("tokenizer", help="train or inspect a tokenizer")
    verbs = p.add_subparsers(dest="tokenizer_verb", required=True, metavar="{train,show}")
    t = verbs.add_parser("train", help="train a byte-level BPE (or char-level) tokenizer on text files or folders")
    t.add_argument("inputs", nargs="+", help="text files or folders (searched recursively)")
    t.add_argument("-o", "--out", required=True, help="output directory for tokenizer.json")
    t.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size, including special tokens (BPE)")
    t.add_argument("--kind", choices=["bpe", "char"], default="bpe", help="byte-level BPE, or one token per character")
    t.add_argument("--special", action="append", default=[], metavar="TOKEN", help="extra special token (repeatable)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(run=run_tokenizer_train)
    s = verbs.add_parser("show", help="show how a text splits into pieces and ids")
    s.add_argument("tokenizer", help="tokenizer or model directory")
    s.add_argument("text", help="text to encode")
    s.set_defaults(run=run_tokenizer_show)


def run_tokenizer_train(args) -> None:
    from lmsmith.tokenizer import train_tokenizer_cli

    train_tokenizer_cli(args.inputs, args.out, kind=args.kind, vocab_size=args.vocab_size,
                        special_tokens=args.special, quiet=args.quiet)


def run_tokenizer_show(args) -> None:
    from lmsmith.tokenizer import load_tokenizer, show_pieces

    show_pieces(load_tokenizer(args.tokenizer), args.text)


# ---------------------------------------------------------------------------------------------
# init


def add_init(sub) -> None:
    p = sub.add_parser("init", help="make a fresh, untrained model directory")
    p.add_argument("config", nargs="?", help="YAML model config (a model: section or bare keys)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.n_layer=4")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory; sets the vocabulary size")
    p.add_argument("-o", "--out", required=True, help="output model directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_init)


def run_init(args) -> None:
    from lmsmith.model_dir import init_model_dir

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config, *overrides]
    init_model_dir(config, overrides, args.tokenizer, args.out, seed=args.seed)


# ---------------------------------------------------------------------------------------------
# generate


def add_generate(sub) -> None:
    p = sub.add_parser("generate", help="write text with a model, streaming tokens as they come")
    p.add_argument("model", help="model or run directory")
    p.add_argument("--prompt", action="append", default=None, help="prompt text (repeat for a batch); \\n is a newline")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--no-stream", action="store_true", help="print each text when it is complete")
    p.set_defaults(run=run_generate)


def run_generate(args) -> None:
    from lmsmith.generate import generate_cli

    generate_cli(args)


# ---------------------------------------------------------------------------------------------
# convert


def add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert between lmsmith and Hugging Face model directories")
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--from-hf", metavar="HF_DIR", help="a local GPT-2 or Llama family directory")
    way.add_argument("--to-hf", metavar="MODEL_DIR", help="an lmsmith model directory")
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.set_defaults(run=run_convert)


def run_convert(args) -> None:
    from lmsmith.convert import export_hf_dir, import_hf_dir

    if args.from_hf:
        import_hf_dir(args.from_hf, args.out)
    else:
        export_hf_dir(args.to_hf, args.out)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmsmith", description="Build your own language model end to end.")
    parser.add_argument("--version", action="version", version=f"lmsmith {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in (add_tokenizer, add_init, add_generate, add_convert):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
