"""The registry: every stage lmsmith has, in the order `lmsmith build` runs the ones it builds.

The command-line verbs, build's order, the sections a recipe may hold and the sections each verb
reads all come from this one list, so they cannot drift apart. To add a stage, write its module
(a config dataclass and `run(config, inputs, out)`) and add one entry here.
"""

from __future__ import annotations

from lmsmith import build as build_module
from lmsmith import convert, evaluate, generate, model_dir, report, tokenizer, tokens_dir
from lmsmith import finetune as finetune_module
from lmsmith.config import ModelConfig
from lmsmith.data import pipeline
from lmsmith.data.config import CurateConfig
from lmsmith.explain import explanation as explain_module
from lmsmith.explain import stage as explain_stage
from lmsmith.export import gguf as gguf_export
from lmsmith.finetune.config import FinetuneConfig
from lmsmith.generate import GenerateConfig
from lmsmith.serve import chat as chat_module
from lmsmith.serve import server as serve_module
from lmsmith.serve.config import ServeConfig
from lmsmith.stage import Flag, Input, Option, Stage
from lmsmith.sweep import study as sweep_study
from lmsmith.sweep.space import SweepConfig
from lmsmith.train import loop
from lmsmith.train.config import TrainConfig

MODEL_INPUT = Input("model", "a model directory, or a run directory (its final model)", metavar="MODEL_OR_RUN")


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


CURATE = Stage(
    "curate", "turn raw text, code and datasets into clean, deduplicated train/val/test shards",
    sections={"curate": CurateConfig}, run=pipeline.run, in_build=True,
    inputs=(Input("sources", "files, folders, hf:NAME[:CONFIG][:SPLIT], or stdlib", many=True, metavar="INPUT",
                  key="curate.inputs"),),
    flags=(Flag("--keep-dropped", "curate.keep_dropped",
                "also write what was removed, with the reason, to OUT/dropped/"),
           Flag("--workers", "curate.workers", "processes for the per-document steps (default: one per core)"),
           Flag("--bias-report", "curate.bias.enabled",
                "count gendered and identity terms, languages, sources and kinds per split (report.json, summary)"),
           Flag("--engine", "curate.engine",
                "local (this machine's cores) or ray (a Ray cluster: pip install 'lmsmith[ray]')"),
           Flag("--address", "curate.address", "--engine ray: the cluster's HOST:PORT (default: the running one; "
                "local: start one here)")),
    output_help="output directory: data/{train,val,test}/, report.json, manifest.json",
)

TOKENIZER = Stage(
    "tokenizer", "train a byte-level BPE (or char-level) tokenizer on a curated directory or text files",
    verb=("tokenizer", "train"), sections={"tokenizer": tokenizer.TokenizerConfig}, run=tokenizer.run, in_build=True,
    inputs=(Input("data", "a curated directory (its train split), or text files and folders", many=True,
                  metavar="DATA"),),
    flags=(Flag("--vocab-size", "tokenizer.vocab_size", "vocabulary size, special tokens included (BPE)"),
           Flag("--kind", "tokenizer.kind", "byte-level BPE, or one token per character"),
           Flag("--special", "tokenizer.special_tokens", "an extra special token (repeatable)"),
           Flag("--sample-mb", "tokenizer.sample_mb", "train on the first this many MB of text")),
    output_help="output directory for tokenizer.json",
)

TOKENIZE = Stage(
    "tokenize", "encode a curated directory (or text files) into token shards for training",
    sections={"tokenize": tokens_dir.TokenizeConfig}, run=tokens_dir.run, in_build=True,
    inputs=(Input("data", "a curated directory (from `lmsmith curate`), or text files and folders", many=True,
                  metavar="DATA"),
            Input("tokenizer", "tokenizer directory (from `lmsmith tokenizer train`)", flag="-t/--tokenizer")),
    flags=(Flag("--val-fraction", "tokenize.val_fraction", "text files only: the last fraction held out as val"),
           Flag("--shard-tokens", "tokenize.shard_tokens", "tokens per shard file")),
    output_help="output tokens directory",
)

INIT = Stage(
    "init", "make a fresh, untrained model directory", sections={"model": ModelConfig, "init": model_dir.InitConfig},
    run=model_dir.run, writes_model=True,
    inputs=(Input("tokenizer", "tokenizer directory; sets the vocabulary size", flag="--tokenizer"),),
    flags=(Flag("--seed", "init.seed", "seed of the random initial weights"),),
    output_help="output model directory",
)

TRAIN = Stage(
    "train", "pretrain a model on token shards (one process, or many under torchrun)",
    sections={"train": TrainConfig, "model": ModelConfig}, run=loop.run, in_build=True, output="optional",
    file_keys=("data", "out"),
    inputs=(Input("tokens", "tokens directory (from `lmsmith tokenize`); or data: in the --config file",
                  required=False, metavar="TOKENS"),),
    flags=(Flag("--minutes", "train.max_minutes", "a time budget: plan the steps that fit (train.steps at most)"),),
    options=(Option("--resume", "continue from the run's newest checkpoint (auto; starts fresh if there is none) "
                                "or from PATH", metavar="auto|PATH"),),
    output_help="the run directory (default: out: in the --config file, else runs/run)",
)

EVAL = Stage(
    "eval", "loss, perplexity and bits per byte of a model on a whole held-out split",
    sections={"eval": evaluate.EvalConfig}, run=evaluate.run, in_build=True, output="optional",
    inputs=(MODEL_INPUT,
            Input("data", "tokens directory (default: the one the model was trained on)", flag="--data",
                  required=False, metavar="TOKENS_DIR")),
    flags=(Flag("--split", "eval.split"), Flag("--context", "eval.context", "tokens each window sees"),
           Flag("--stride", "eval.stride", "tokens a window moves on"),
           Flag("--batch-size", "eval.batch_size", "windows per forward pass"),
           Flag("--device", "eval.device"), Flag("--precision", "eval.precision")),
    options=(Option("--json", "print one JSON object instead of the table", dest="as_json", boolean=True),),
    output_help="also write result.json and its manifest here",
)

GENERATE = Stage(
    "generate", "write text with a model, streaming tokens as they come",
    sections={"generate": GenerateConfig}, run=generate.run, in_build=True, output="optional",
    inputs=(MODEL_INPUT,),
    flags=(Flag("--prompt", "generate.prompts", "prompt text (repeat for a batch); \\n is a newline", _unescape),
           Flag("--max-new-tokens", "generate.max_new_tokens"),
           Flag("--temperature", "generate.temperature", "0 is greedy"),
           Flag("--top-k", "generate.top_k"), Flag("--top-p", "generate.top_p"),
           Flag("--repetition-penalty", "generate.repetition_penalty"),
           Flag("--stop", "generate.stop", "stop string (repeatable)", _unescape),
           Flag("--seed", "generate.seed"), Flag("--device", "generate.device"),
           Flag("--chat", "generate.chat", "each prompt is a user's message, put through the model's chat template"),
           Flag("--template", "generate.template", "with --chat: chatml, plain or raw, for a model without its own"),
           Flag("--compile", "generate.compile", "decode through torch.compile: the same tokens, faster after "
                "a compilation of tens of seconds")),
    options=(Option("--no-stream", "print each text when it is complete", boolean=True),),
    output_help="also write samples.json and its manifest here",
)

SERVE = Stage(
    "serve", "serve a model over OpenAI's API (completions and chat), many users at once",
    sections={"serve": ServeConfig}, run=serve_module.run, output="none",
    inputs=(MODEL_INPUT,),
    flags=(Flag("--host", "serve.host", "address to listen on; 0.0.0.0 for every network"),
           Flag("--port", "serve.port", "port to listen on (0: any free one)"),
           Flag("--api-key-file", "serve.api_key_file", "file holding the key clients must send"),
           Flag("--max-batch", "serve.max_batch", "requests decoded together"),
           Flag("--max-queue", "serve.max_queue", "requests waiting for a slot before 429"),
           Flag("--model-name", "serve.model_name", "the model id clients name (default: the directory's name)"),
           Flag("--template", "serve.template", "chat template for a model without its own"),
           Flag("--log-text", "serve.log_text", "also log prompts and outputs"),
           Flag("--device", "serve.device"), Flag("--threads", "serve.threads", "CPU threads for the model"),
           Flag("--compile", "serve.compile", "decode through torch.compile: faster steps, after a compilation "
                "of up to a minute at start-up")),
    options=(Option("--api-key", "the key clients must send (prefer --api-key-file: a key here shows in `ps`)",
                    metavar="KEY"),),
)

CHAT = Stage(
    "chat", "talk with a model in the terminal, its answers streamed", sections={"chat": chat_module.ChatConfig},
    run=chat_module.run, output="none", inputs=(MODEL_INPUT,),
    flags=(Flag("--system", "chat.system", "a system message to start with"),
           Flag("--temperature", "chat.temperature", "0 is greedy"), Flag("--top-p", "chat.top_p"),
           Flag("--top-k", "chat.top_k"), Flag("--max-new-tokens", "chat.max_new_tokens"),
           Flag("--template", "chat.template", "chat template for a model without its own"),
           Flag("--seed", "chat.seed"), Flag("--device", "chat.device"),
           Flag("--compile", "chat.compile", "decode through torch.compile: faster answers after a compilation "
                "of tens of seconds before the first")),
)

CONVERT = Stage(
    "convert", "convert between lmsmith and Hugging Face model directories, or from a GGUF file", sections={},
    run=convert.run, writes_model=True,
    inputs=(Input("from_hf", "a local GPT-2, GPT-Neo, Llama, Mistral, Qwen2 or Qwen3 directory", flag="--from-hf",
                  required=False, metavar="HF_DIR"),
            Input("from_gguf", "a GGUF file (llama, qwen2, qwen3, gpt2; any quantization), dequantized",
                  flag="--from-gguf", required=False, metavar="FILE"),
            Input("to_hf", "an lmsmith model directory", flag="--to-hf", required=False, metavar="MODEL_DIR")),
    output_help="output directory",
)

EXPORT = Stage(
    "export", "write a model as one GGUF file for llama.cpp (and a Modelfile for Ollama)",
    sections={"export": gguf_export.ExportConfig}, run=gguf_export.run,
    inputs=(MODEL_INPUT,),
    flags=(Flag("--quant", "export.quant", "type of the weight matrices (vectors stay f32)"),
           Flag("--ollama", "export.ollama", "-o is a directory: model.gguf, a Modelfile and manifest.json")),
    output_help="the .gguf file to write (with --ollama: a directory)",
)

FINETUNE = Stage(
    "finetune",
    "specialise a model on domain data: full fine-tuning or LoRA, instruction tuning or continued pretraining",
    sections={"finetune": FinetuneConfig, "train": TrainConfig}, run=finetune_module.run,
    load_config=finetune_module.load_config, writes_model=True,
    inputs=(Input("base", "start point: a run or model directory, a Hugging Face GPT-2/Llama directory, or hf:NAME",
                  required=False, metavar="BASE"),
            Input("data", "instruct: a JSONL file; continue: text files, a folder, a curated or tokens directory",
                  flag="--data", required=False),
            Input("merge", "fold the LoRA adapter of RUN (or an adapter directory) into its base", flag="--merge",
                  required=False, metavar="RUN"),
            Input("merge_base", "with --merge: the base to fold into (default: the one the adapter names)",
                  flag="--base", required=False, metavar="BASE")),
    flags=(Flag("--mode", "finetune.mode", "answers to prompts (instruct), or more pretraining on text (continue)"),
           Flag("--method", "finetune.method", "train every weight (full), or only LoRA adapters (lora)"),
           Flag("--template", "finetune.template", "chat template for instruct data")),
    output_help="the run directory (with --merge: the merged model directory)",
)

SWEEP = Stage(
    "sweep", "search hyperparameters with Optuna: short training runs, median pruning",
    sections={"sweep": SweepConfig}, run=sweep_study.run, load_config=sweep_study.load_config, output="optional",
    config_input="recipe",
    inputs=(Input("recipe", "recipe YAML with a sweep: section (or a shipped recipe's name)", required=False,
                  metavar="RECIPE"),),
    flags=(Flag("--trials", "sweep.trials", "trials in the study, counting those of earlier runs"),
           Flag("--budget-minutes", "sweep.budget_minutes", "stop after this many minutes; run again to continue")),
    options=(Option("--storage", "Optuna storage shared by machines, e.g. postgresql://host/db", metavar="URL"),
             Option("--study-name", "the study's name in the storage (default: the recipe's name)"),
             Option("--data", "train every trial on these tokens instead of building them", metavar="TOKENS_DIR"),
             Option("--workdir", "where the recipe's data stages are built (default: work/NAME)")),
    output_help="sweep directory: study, trials, results, best recipe, plots (default: sweeps/NAME)",
)

REPORT = Stage(
    "report", "a self-contained report.html with loss curves, schedule, throughput, data and scores",
    sections={}, run=report.run, output="optional",
    inputs=(Input("path", "a training run, or a build's work directory", metavar="RUN_OR_WORKDIR"),),
    output_help="where report.html and the PNGs go (default: RUN_OR_WORKDIR/report)",
)

EXPLAIN = Stage(
    "explain", "see inside a model: tokens, attention, the logit lens, next-token odds, embeddings, head roles",
    sections={"explain": explain_module.ExplainConfig}, run=explain_stage.run, output="optional",
    inputs=(MODEL_INPUT,
            Input("text", "text to explain (\\n is a newline); may be left out with --heads", required=False,
                  metavar="TEXT"),
            Input("data", "--heads: tokens directory whose val split is the held-out text (default: the model's)",
                  flag="--data", required=False, metavar="TOKENS_DIR")),
    flags=(Flag("--focus", "explain.focus", "a token of the text: which earlier tokens each head looks at from it"),
           Flag("--heads", "explain.heads", "also measure what each head does over held-out text"),
           Flag("--top-k", "explain.top_k", "guesses shown per position"),
           Flag("--temperature", "explain.temperature", "of the sampled pick (default: the recipe's)"),
           Flag("--seed", "explain.seed"), Flag("--device", "explain.device")),
    output_help="where index.html, the PNGs and explain.json go (default: RUN/explain)",
)

TOKENIZER_SHOW = Stage(
    "tokenizer-show", "show how a text splits into pieces and ids", verb=("tokenizer", "show"), sections={},
    run=tokenizer.run_show, output="none",
    inputs=(Input("tokenizer", "tokenizer or model directory", metavar="TOKENIZER"),
            Input("text", "text to encode", metavar="TEXT")),
)

BUILD = Stage(
    "build", "run every stage of a recipe: curate, tokenizer, tokenize, train, eval, samples",
    sections={}, run=build_module.run, load_config=build_module.load_config, output="optional", config_input="recipe",
    inputs=(Input("recipe", "recipe YAML or the name of a shipped recipe (default: quickstart)", required=False,
                  metavar="RECIPE"),),
    options=(Option("--force", "redo this stage and the ones after it even if up to date (repeatable)",
                    metavar="STAGE", repeat=True),
             Option("--until", "stop after this stage", metavar="STAGE"),
             Option("--nproc-per-node", "train with N processes under torchrun (e.g. one per GPU)", metavar="N",
                    type=int, default=1),
             Option("--minutes", "train for N minutes: the steps that fit are planned (train.steps is ignored)",
                    metavar="N", type=float)),
    output_help="work directory (default: work/RECIPE_NAME)",
)

# Every verb, in the order `lmsmith --help` lists them; the in_build ones in the order build runs them.
STAGES: tuple[Stage, ...] = (BUILD, CURATE, TOKENIZER, TOKENIZER_SHOW, TOKENIZE, INIT, TRAIN, EVAL, GENERATE, SERVE,
                             CHAT, CONVERT, EXPORT, FINETUNE, SWEEP, REPORT, EXPLAIN)
BUILD_STAGES: tuple[Stage, ...] = tuple(s for s in STAGES if s.in_build)


def stage_named(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def all_sections() -> dict[str, type]:
    """Every section a recipe may hold, with its dataclass: the union of what the stages read."""
    sections: dict[str, type] = {}
    for stage in STAGES:
        for name, cls in stage.sections.items():
            sections.setdefault(name, cls)
    return sections


def all_file_keys() -> tuple[str, ...]:
    """Top-level keys of a config file that are not sections (a training recipe's data: and out:)."""
    return tuple(dict.fromkeys(k for stage in STAGES for k in stage.file_keys))
