"""The registry: every stage lmsmith has, in the order `lmsmith --help` lists them.

The command-line verbs, the classic journey of `lmsmith build`, the steps a recipe may list and
the sections each verb reads all come from this one list, so they cannot drift apart. To add a
stage, write its module (a config dataclass in lmsmith.schema, and `run(config, inputs, out)`)
and add one entry here; to make it a step of a build, say where it writes (`writes`), what it
makes for later steps (`makes`) and which kind each of its inputs reads (`Input.reads`).
`lmsmith build` and `lmsmith sweep`, which run stages rather than being one, sit above this
registry (lmsmith.build, lmsmith.sweep) and add their verbs to it in lmsmith.cli.
"""

from __future__ import annotations

from pathlib import Path

from lmsmith import finetune as finetune_module
from lmsmith.data import classifier_training, pipeline
from lmsmith.evaluate import heldout
from lmsmith.exam import stage as exam_stage
from lmsmith.explain import stage as explain_stage
from lmsmith.export import gguf as gguf_export
from lmsmith.export import stage as export_stage
from lmsmith.finetune.job import show_report
from lmsmith.generate import samples
from lmsmith.interop import convert
from lmsmith.model import directory as model_dir
from lmsmith.report import page as report
from lmsmith.schema.classifier import ClassifierConfig
from lmsmith.schema.curate import CurateConfig
from lmsmith.schema.evaluate import EvalConfig
from lmsmith.schema.exam import ExamConfig
from lmsmith.schema.explain import ExplainConfig
from lmsmith.schema.export import ExportConfig
from lmsmith.schema.finetune import FinetuneConfig, finetune_from_sections
from lmsmith.schema.generate import GenerateConfig
from lmsmith.schema.model import InitConfig, ModelConfig
from lmsmith.schema.serve import ChatConfig, ServeConfig
from lmsmith.schema.sizing import SizingConfig
from lmsmith.schema.stage import Flag, Input, Option, Stage
from lmsmith.schema.synth import SynthConfig
from lmsmith.schema.text import TokenizeConfig, TokenizerConfig
from lmsmith.schema.train import TrainConfig, plan_batch
from lmsmith.serve import chat as chat_module
from lmsmith.serve import server as serve_module
from lmsmith.synth import stage as synth_stage
from lmsmith.text import tokenizer, tokens_dir
from lmsmith.text.chat_template import get_template
from lmsmith.train import loop

MODEL_INPUT = Input("model", "a model directory, or a run directory (its final model)", metavar="MODEL_OR_RUN",
                    reads="model")


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _check_batch(config, processes: int) -> None:
    plan_batch(config.train, config.model.block_size, processes)


def _check_finetune(config, processes: int) -> None:
    get_template(config.finetune.template)


def _check_generate(config, processes: int) -> None:
    if config.generate.template is not None:
        get_template(config.generate.template)


def _check_export(config, processes: int) -> None:
    from lmsmith.core.config import ConfigError

    if not config.export.ollama:
        raise ConfigError("export.ollama is false, but a build step writes a folder: set export.ollama=true "
                          "(model.gguf, a Modelfile and manifest.json)")


def _show_export(out: Path) -> None:
    print(f"exported {out / gguf_export.GGUF_FILE}; run it: "
          f"ollama create NAME -f {out / gguf_export.MODELFILE} && ollama run NAME")


def _show_page(name: str):
    return lambda out: print(f"open {out / name}")


CURATE = Stage(
    "curate", "turn raw text, code and datasets into clean, deduplicated train/val/test shards",
    sections={"curate": CurateConfig}, run=pipeline.run, in_build=True, writes="data", makes="data",
    inputs=(Input("sources", "files, folders, hf:NAME[:CONFIG][:SPLIT], or stdlib", many=True, metavar="INPUT",
                  key="curate.inputs"),),
    flags=(Flag("--keep-dropped", "curate.keep_dropped",
                "also write what was removed, with the reason, to OUT/dropped/"),
           Flag("--workers", "curate.workers", "processes for the per-document steps (default: one per core)"),
           Flag("--classifier", "curate.classifier", "a directory from `lmsmith curate train-classifier`: keep the "
                "documents it scores at least curate.classifier_threshold"),
           Flag("--exclude-exam", "curate.exclude_exam", "an exam task file or folder (repeatable): drop every "
                "document sharing a 13-gram of words with one of its items"),
           Flag("--bias-report", "curate.bias.enabled",
                "count gendered and identity terms, languages, sources and kinds per split (report.json, summary)"),
           Flag("--engine", "curate.engine",
                "local (this machine's cores) or ray (a Ray cluster: pip install 'lmsmith[ray]')"),
           Flag("--address", "curate.address", "--engine ray: the cluster's HOST:PORT (default: the running one; "
                "local: start one here)")),
    output_help="output directory: data/{train,val,test}/, report.json, manifest.json",
)

CURATE_CLASSIFIER = Stage(
    "curate-classifier", "train the learned quality filter (curate.classifier) on {\"text\", \"label\"} lines",
    verb=("curate", "train-classifier"), sections={"classifier": ClassifierConfig}, run=classifier_training.run,
    inputs=(Input("labels", "a JSONL file of {\"text\", \"label\"} lines (label: good/bad, 1/0)",
                  metavar="LABELS"),),
    output_help="output directory: classifier.json, weights.npy, manifest.json (precision and recall held out)",
)

TOKENIZER = Stage(
    "tokenizer", "train a byte-level BPE (or char-level) tokenizer on a curated directory or text files",
    verb=("tokenizer", "train"), sections={"tokenizer": TokenizerConfig}, run=tokenizer.run, in_build=True,
    writes="tokenizer", makes="tokenizer",
    inputs=(Input("data", "a curated directory (its train split), or text files and folders", many=True,
                  metavar="DATA", reads="data", otherwise="tokenize.inputs"),),
    flags=(Flag("--vocab-size", "tokenizer.vocab_size", "vocabulary size, special tokens included (BPE)"),
           Flag("--kind", "tokenizer.kind", "byte-level BPE, or one token per character"),
           Flag("--special", "tokenizer.special_tokens", "an extra special token (repeatable)"),
           Flag("--sample-mb", "tokenizer.sample_mb", "train on the first this many MB of text")),
    output_help="output directory for tokenizer.json",
)

TOKENIZE = Stage(
    "tokenize", "encode a curated directory (or text files) into token shards for training",
    sections={"tokenize": TokenizeConfig}, run=tokens_dir.run, in_build=True, writes="tokens", makes="tokens",
    inputs=(Input("data", "a curated directory (from `lmsmith curate`), or text files and folders", many=True,
                  metavar="DATA", reads="data", otherwise="tokenize.inputs"),
            Input("tokenizer", "tokenizer directory (from `lmsmith tokenizer train`)", flag="-t/--tokenizer",
                  reads="tokenizer")),
    flags=(Flag("--val-fraction", "tokenize.val_fraction", "text files only: the last fraction held out as val"),
           Flag("--shard-tokens", "tokenize.shard_tokens", "tokens per shard file")),
    output_help="output tokens directory",
)

INIT = Stage(
    "init", "make a fresh, untrained model directory", sections={"model": ModelConfig, "init": InitConfig},
    run=model_dir.run, writes_model=True,
    inputs=(Input("tokenizer", "tokenizer directory; sets the vocabulary size", flag="--tokenizer"),),
    flags=(Flag("--seed", "init.seed", "seed of the random initial weights"),),
    output_help="output model directory",
)

TRAIN = Stage(
    "train", "pretrain a model on token shards (one process, or many under torchrun)",
    sections={"train": TrainConfig, "model": ModelConfig, "sizing": SizingConfig}, run=loop.run, in_build=True,
    output="optional",
    file_keys=("data", "out"), writes="runs/main", makes="model", done=loop.FINAL_MODEL, resumable=True,
    torchrun=True, check_step=_check_batch, show=loop.show_run,
    inputs=(Input("tokens", "tokens directory (from `lmsmith tokenize`); or data: in the --config file",
                  required=False, metavar="TOKENS", reads="tokens"),),
    flags=(Flag("--minutes", "train.max_minutes", "a time budget: plan the steps that fit (train.steps at most)"),),
    options=(Option("--resume", "continue from the run's newest checkpoint (auto; starts fresh if there is none) "
                                "or from PATH", metavar="auto|PATH"),),
    output_help="the run directory (default: out: in the --config file, else runs/run)",
)

EVAL = Stage(
    "eval", "loss, perplexity and bits per byte of a model on a whole held-out split",
    sections={"eval": EvalConfig}, run=heldout.run, in_build=True, output="optional", writes="eval",
    makes="scores", show=heldout.show_result,
    inputs=(MODEL_INPUT,
            Input("data", "tokens directory (default: the one the model was trained on)", flag="--data",
                  required=False, metavar="TOKENS_DIR", reads="tokens")),
    flags=(Flag("--split", "eval.split"), Flag("--context", "eval.context", "tokens each window sees"),
           Flag("--stride", "eval.stride", "tokens a window moves on"),
           Flag("--batch-size", "eval.batch_size", "windows per forward pass"),
           Flag("--device", "eval.device"), Flag("--precision", "eval.precision"),
           Flag("--text", "eval.text", "score these text files or folders (each file a document) instead of a split",
                many=True)),
    options=(Option("--json", "print one JSON object instead of the table", dest="as_json", boolean=True),),
    output_help="also write result.json and its manifest here",
)

GENERATE = Stage(
    "generate", "write text with a model, streaming tokens as they come",
    sections={"generate": GenerateConfig}, run=samples.run, in_build=True, output="optional", writes="samples",
    makes="samples", show=samples.show_samples, check_step=_check_generate,
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
                "a compilation of tens of seconds"),
           Flag("--json-schema", "generate.json_schema", "a JSON schema file: every output is JSON valid against it"),
           Flag("--regex", "generate.regex", "a regular expression every whole output matches")),
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
           Flag("--kv-cache-tokens", "serve.kv_cache_tokens", "the most tokens the KV cache (a pool of blocks "
                "allocated as requests need them, shared by the requests in flight) may hold (default: half the "
                "free memory, at most max-batch x the context)"),
           Flag("--kv-cache-gb", "serve.kv_cache_gb", "the most GiB the KV cache's pool of blocks may take"),
           Flag("--adapter", "serve.adapters", "a LoRA adapter to serve too, NAME=RUN_DIR (repeatable): requests "
                "name it as their model"),
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
    "chat", "talk with a model in the terminal, its answers streamed", sections={"chat": ChatConfig},
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
    sections={"export": ExportConfig}, run=export_stage.run, writes="export", makes="gguf",
    check_step=_check_export, show=_show_export,
    inputs=(MODEL_INPUT,),
    flags=(Flag("--quant", "export.quant", "type of the weight matrices (vectors stay f32)"),
           Flag("--ollama", "export.ollama", "-o is a directory: model.gguf, a Modelfile and manifest.json")),
    output_help="the .gguf file to write (with --ollama: a directory)",
)

FINETUNE = Stage(
    "finetune",
    "specialise a model on domain data: full fine-tuning or LoRA, instruction tuning or continued pretraining",
    sections={"finetune": FinetuneConfig, "train": TrainConfig}, run=finetune_module.run,
    from_sections=finetune_from_sections, writes_model=True, writes="runs/finetune", makes="model",
    done=loop.FINAL_MODEL, check_step=_check_finetune, show=show_report, resumable=True,
    inputs=(Input("base", "start point: a run or model directory, a Hugging Face GPT-2/Llama directory, or hf:NAME",
                  required=False, metavar="BASE", reads="model"),
            Input("data", "instruct: a JSONL file; continue: text files, a folder, a curated or tokens directory; "
                  "or a synth output directory (its qa or conversation items for instruct, pairs for dpo, exam for rl)",
                  flag="--data", required=False, key="finetune.data", reads="synth"),
            Input("merge", "fold the LoRA adapter of RUN (or an adapter directory) into its base", flag="--merge",
                  required=False, metavar="RUN"),
            Input("merge_base", "with --merge: the base to fold into (default: the one the adapter names)",
                  flag="--base", required=False, metavar="BASE")),
    flags=(Flag("--mode", "finetune.mode", "answers to prompts (instruct), more pretraining on text (continue), "
                "preference pairs (dpo), or RL against checkable rewards (rl)"),
           Flag("--method", "finetune.method", "train every weight (full), or only LoRA adapters (lora); "
                "--method dpo|rl is --mode dpo|rl", also=("dpo", "rl")),
           Flag("--template", "finetune.template", "chat template for instruct data")),
    output_help="the run directory (with --merge: the merged model directory)",
)

EXAM = Stage(
    "exam", "score models on tasks you write (multiple choice, answers, JSON, SQL, Python), side by side",
    sections={"exam": ExamConfig}, run=exam_stage.run, output="optional", in_build=False, writes="exam",
    makes="exam", show=exam_stage.show,
    inputs=(Input("models", "model or run directories, Hugging Face directories, GGUF files, or http://... "
                  "OpenAI-compatible servers; one model may be followed by its tasks, without --tasks", many=True,
                  metavar="MODEL", reads="model"),
            Input("tasks", "JSONL task files, or folders of them", flag="--tasks", many=True, required=False,
                  metavar="TASK", key="exam.tasks")),
    flags=(Flag("--limit", "exam.limit", "score only the first N items of each task"),
           Flag("--lm-eval", "exam.lm_eval", "also run lm-evaluation-harness tasks (comma-separated, repeatable)"),
           Flag("--max-new-tokens", "exam.max_new_tokens"),
           Flag("--temperature", "exam.temperature", "of the samples of items with samples: k"),
           Flag("--pass-k", "exam.pass_k", "report pass@k of items with samples"),
           Flag("--chat", "exam.chat", "prompts as a user's message in the model's chat template"),
           Flag("--template", "exam.template", "with --chat: chatml, plain or raw, for a model without its own"),
           Flag("--batch-size", "exam.batch_size", "items per forward pass"),
           Flag("--timeout", "exam.timeout", "seconds a Python item's tests may run"),
           Flag("--failures", "exam.failures", "write each item a model got wrong, with its answer (and the "
                "reference, as a DPO pair's chosen), to this JSONL file"),
           Flag("--seed", "exam.seed"), Flag("--device", "exam.device")),
    options=(Option("--json", "print one JSON object instead of the table", dest="as_json", boolean=True),
             Option("--decontaminated", "score without the items whose 13-grams are in the model's training data",
                    boolean=True)),
    output_help="also write exam.json (every item's output and score), exam.html and a manifest here",
)

REPORT = Stage(
    "report", "a self-contained report.html with loss curves, schedule, throughput, data and scores",
    sections={}, run=report.run, output="optional", in_build=True, writes="report", makes="report",
    show=_show_page(report.REPORT_HTML),
    inputs=(Input("path", "a training run, or a build's work directory", metavar="RUN_OR_WORKDIR",
                  reads="workdir"),),
    output_help="where report.html and the PNGs go (default: RUN_OR_WORKDIR/report)",
)

EXPLAIN = Stage(
    "explain", "see inside a model: tokens, attention, the logit lens, next-token odds, embeddings, head roles",
    sections={"explain": ExplainConfig}, run=explain_stage.run, output="optional", in_build=True,
    writes="explain", makes="explanation", show=_show_page(explain_stage.INDEX),
    inputs=(MODEL_INPUT,
            Input("text", "text to explain (\\n is a newline); may be left out with --heads or --samples",
                  required=False, metavar="TEXT"),
            Input("data", "--heads: tokens directory whose val split is the held-out text (default: the model's)",
                  flag="--data", required=False, metavar="TOKENS_DIR"),
            Input("samples", "explain the first text a generate output holds (its samples.json)", flag="--samples",
                  required=False, metavar="SAMPLES_DIR", reads="samples")),
    flags=(Flag("--focus", "explain.focus", "a token of the text: which earlier tokens each head looks at from it"),
           Flag("--heads", "explain.heads", "also measure what each head does over held-out text"),
           Flag("--top-k", "explain.top_k", "guesses shown per position"),
           Flag("--temperature", "explain.temperature", "of the sampled pick (default: the recipe's)"),
           Flag("--seed", "explain.seed"), Flag("--device", "explain.device")),
    output_help="where index.html, the PNGs and explain.json go (default: RUN/explain)",
)

SYNTH = Stage(
    "synth", "write instruction data (questions and answers, conversations, exam items, DPO pairs) from documents "
    "with a teacher model behind an OpenAI-compatible endpoint",
    sections={"synth": SynthConfig}, run=synth_stage.run, writes="synth", makes="synth",
    inputs=(Input("docs", "a curated directory, or text files and folders", many=True, metavar="DOCS",
                  key="synth.inputs", reads="data", otherwise="synth.inputs"),),
    flags=(Flag("--endpoint", "synth.endpoint", "the teacher's base URL, e.g. http://127.0.0.1:8000/v1"),
           Flag("--model", "synth.model", "the teacher model's id, as the server lists it"),
           Flag("--kind", "synth.kind", "qa, conversation, exam (multiple choice), pairs (DPO), or labels "
                "(good/bad per passage, for `curate train-classifier`)"),
           Flag("--prompt", "synth.prompt", "a Jinja template replacing the kind's shipped prompt"),
           Flag("--api-key-file", "synth.api_key_file", "a file holding the API key (else $OPENAI_API_KEY)"),
           Flag("--concurrency", "synth.concurrency", "requests in flight at once"),
           Flag("--max-items", "synth.max_items", "stop after this many items"),
           Flag("--max-tokens", "synth.max_tokens", "stop after the teacher has used this many tokens"),
           Flag("--exclude-exam", "synth.exclude_exam", "an exam task file or folder (repeatable): drop items "
                "sharing a 13-gram of words with one of its items"),
           Flag("--verify", "synth.verify", "ask the teacher whether each answer is supported by its passage "
                "(default: a lexical-overlap rule)")),
    output_help="output directory: KIND.jsonl, dropped.jsonl, report.json, journal.jsonl (resumable)",
)

TOKENIZER_SHOW = Stage(
    "tokenizer-show", "show how a text splits into pieces and ids", verb=("tokenizer", "show"), sections={},
    run=tokenizer.run_show, output="none",
    inputs=(Input("tokenizer", "tokenizer or model directory", metavar="TOKENIZER"),
            Input("text", "text to encode", metavar="TEXT")),
)

# Every stage, in the order `lmsmith --help` lists them; the in_build ones in the order the classic journey runs.
STAGES: tuple[Stage, ...] = (CURATE, CURATE_CLASSIFIER, TOKENIZER, TOKENIZER_SHOW, TOKENIZE, INIT, TRAIN, EVAL,
                             GENERATE, SERVE, CHAT, CONVERT, EXPORT, SYNTH, FINETUNE, EXAM, REPORT, EXPLAIN)
STAGE_BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
