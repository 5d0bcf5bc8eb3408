"""`lmsmith synth DOCS -o DIR --endpoint URL --model NAME`: instruction data written from documents by a teacher.

OUT is written in place under a lock, because it is resumable: `journal.jsonl` grows as answers
arrive (see lmsmith.synth.journal), and the final files are rebuilt from it, each atomically, at
the end of every run:

    OUT/KIND.jsonl     the kept items, in the format finetune (qa, conversation, pairs) or exam reads
    OUT/dropped.jsonl  what the checks removed, each with its reason
    OUT/report.json    counts: passages, too short, parsed, dropped by each check, tokens, items per minute
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lmsmith.core.atomic import write_json, write_text
from lmsmith.core.config import section_to_dict
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import manifest_or_none
from lmsmith.core.output import check_output, directory_lock, remove_leftovers, write_manifest
from lmsmith.schema.synth import SynthConfig
from lmsmith.synth.finish import check_lines, lines_in_order
from lmsmith.synth.generate import Asker, ask_all
from lmsmith.synth.journal import Journal, entry_key
from lmsmith.synth.kinds import KINDS
from lmsmith.synth.passages import passages_of
from lmsmith.synth.prompts import VERIFY, PromptTemplate
from lmsmith.synth.teacher import Teacher, api_key

STAGE = "synth"
REPORT = "report.json"
DROPPED = "dropped.jsonl"


def _jsonl(lines: list[dict]) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def _report(cfg: SynthConfig, passages: list, short: int, journal: Journal, result, teacher: Teacher,
            seconds: float, asked: int, items_before: int) -> dict:
    entries = [journal.entries[k] for k in (entry_key(p.hash, cfg.kind) for p in passages) if k in journal.entries]
    parsed = sum(e.parsed for e in entries)
    return {
        "kind": cfg.kind, "passages": len(passages), "too_short": short, "answered": len(entries),
        "parsed": parsed, "parse_failures": len(entries) - parsed,
        "parsed_share": round(parsed / len(entries), 4) if entries else None,
        "structured_output": teacher.structured, "items_generated": len(result.kept) + len(result.dropped),
        "dropped": dict(result.drops), "items_written": len(result.kept), "tokens": journal.tokens,
        "asked_this_run": asked, "seconds_this_run": round(seconds, 2),
        "items_per_minute_this_run": round((journal.items - items_before) * 60 / seconds, 2) if seconds else None,
    }


def _start_output(out: Path, cfg: SynthConfig) -> None:
    # A manifest from the first moment marks OUT as synth's, so a rerun after a kill may continue in it.
    if manifest_or_none(out) is None:
        write_manifest(out, STAGE, config=section_to_dict(cfg), counts={"finished": False})


def run(config, inputs: dict, out: str | Path, *, quiet: bool = False) -> dict:
    cfg: SynthConfig = config.synth
    cfg.check_teacher()
    docs = list(inputs.get("docs") or cfg.inputs)
    out = Path(out).expanduser()
    check_output(out, STAGE, reads=docs)
    kind = KINDS[cfg.kind]
    template = PromptTemplate(cfg.kind, cfg.prompt)
    if cfg.verify:
        PromptTemplate(VERIFY)
    passages, short = passages_of(docs, cfg.passage_chars, cfg.min_passage_chars, exclude=[str(out)])
    if not passages:
        raise UserError(f"no passage of at least {cfg.min_passage_chars} characters in {', '.join(docs)} "
                        f"({short} shorter ones skipped): give longer documents or lower synth.min_passage_chars")
    teacher = Teacher(cfg, api_key(cfg))
    teacher.check_model()
    remove_leftovers(out)
    with directory_lock(out, "synth run"):
        _start_output(out, cfg)
        journal = Journal.open(out)
        items_before, started = journal.items, time.perf_counter()
        asked = ask_all(Asker(teacher, kind, template, cfg), passages, journal, quiet=quiet)
        seconds = time.perf_counter() - started
        lines = lines_in_order(passages, journal, kind, cfg.max_items)
        result = check_lines(lines, passages, kind, cfg, teacher)
        report = _report(cfg, passages, short, journal, result, teacher, seconds, asked, items_before)
        write_text(out / f"{cfg.kind}.jsonl", _jsonl(result.kept))
        write_text(out / DROPPED, _jsonl(result.dropped))
        write_json(out / REPORT, report)
        manifest = write_manifest(out, STAGE, config=section_to_dict(cfg), inputs={"docs": docs},
                                  counts={"finished": True, **{k: v for k, v in report.items() if k != "dropped"}})
    if not quiet:
        print(f"synth: {report['items_written']} {cfg.kind} items in {out / (cfg.kind + '.jsonl')} from "
              f"{report['answered']} passages ({report['parse_failures']} answers did not parse, "
              f"{short} passages too short, dropped {dict(result.drops) or 'none'}; {journal.tokens:,} tokens)",
              file=sys.stderr)
    return manifest
