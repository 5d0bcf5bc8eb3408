"""The tokens directory that `lmsmith tokenize` writes: a corpus encoded once into flat binary files
that training memory-maps.

    TOKENS/train/shard-00000.bin ...   token ids, little-endian uint16 (vocab <= 65536) or uint32
    TOKENS/val/ ...  TOKENS/test/ ...
    TOKENS/tokenizer.json              a copy of the tokenizer that made the ids (and its config)
    TOKENS/manifest.json               stage "tokenize": dtype, end-of-text id, tokenizer hash,
                                       tokens and documents per split, tokens per shard

Each split is one stream of ids, documents joined by the end-of-text token: doc0 <eot> doc1
<eot> doc2. Shards are consecutive pieces of that stream, cut every `shard_tokens` ids; a shard is
a plain array, so `np.memmap` reads any window of it without loading the file.

Input is a curated directory (its train, val and test splits) or plain text files and folders
(each file one document, all in train; the last `val_fraction` of the train stream becomes val,
as nanoGPT does for Shakespeare). Encoding uses every core: `encode_batch` of the tokenizers
library spreads a batch of texts over its own thread pool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from lmsmith.core.config import parse_section
from lmsmith.core.errors import UserError, cannot_read, is_disk_full
from lmsmith.core.manifest import MANIFEST, file_sha256, read_manifest
from lmsmith.core.progress import progress_bar
from lmsmith.schema.text import SHARD_TOKENS, TokenizeConfig
from lmsmith.text.tokenizer import TOKENIZER_FILE, TextFiles, Tokenizer, load_tokenizer

STAGE = "tokenize"
SPLITS = ("train", "val", "test")
BATCH_BYTES = 4 << 20  # text handed to one encode_batch call: enough to keep every core busy


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id of the vocabulary."""
    if vocab_size <= 1 << 16:
        return np.dtype("<u2")
    if vocab_size <= 1 << 32:
        return np.dtype("<u4")
    raise UserError(f"a vocabulary of {vocab_size} tokens does not fit uint32 ids: use a smaller tokenizer")


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass
class SplitWriter:
    """One split's stream of ids into `folder/shard-NNNNN.bin`, a new shard every `shard_tokens` ids."""

    folder: Path
    dtype: np.dtype
    shard_tokens: int
    eot_id: int
    documents: int = 0
    shards: list[dict] = field(default_factory=list)  # {"name", "tokens", "sha256"} per closed shard
    _file: object = None
    _hash: object = None
    _in_shard: int = 0

    def add_document(self, ids: list[int]) -> None:
        if self.documents:
            self._write(np.array([self.eot_id], dtype=self.dtype))
        self._write(np.asarray(ids, dtype=self.dtype))
        self.documents += 1

    def add_continuation(self, ids: list[int]) -> None:
        """More ids of the document already started (a long file arrives in pieces)."""
        self._write(np.asarray(ids, dtype=self.dtype))

    def _write(self, ids: np.ndarray) -> None:
        try:
            while len(ids):
                if self._file is None:
                    self._open()
                room = self.shard_tokens - self._in_shard
                piece, ids = ids[:room], ids[room:]
                data = piece.tobytes()
                self._file.write(data)
                self._hash.update(data)
                self._in_shard += len(piece)
                if self._in_shard == self.shard_tokens:
                    self._close_shard()
        except OSError as exc:
            raise self._write_failed(exc) from None

    def _write_failed(self, exc: OSError) -> UserError:
        """A full disk (or another failed write) as one line; the half-written shards are in a temporary folder."""
        file = self.folder.parent / self.shards[-1]["name"] if self.shards else self.folder
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        if is_disk_full(exc):
            return UserError(f"disk full while writing {file}: free some space and run again "
                             "(an earlier output directory is kept until the new one is complete)")
        return UserError(f"cannot write {file} ({exc.strerror or exc}): check the disk and its permissions, "
                         "then run again")

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{self.folder.name}/shard-{len(self.shards):05d}.bin"
        self._file = open(self.folder.parent / name, "wb")
        self._hash = hashlib.sha256()
        self._in_shard = 0
        self.shards.append({"name": name, "tokens": 0, "sha256": ""})

    def _close_shard(self) -> None:
        self._file.close()
        self.shards[-1].update(tokens=self._in_shard, sha256=self._hash.hexdigest())
        self._file = None

    def close(self) -> None:
        if self._file is not None:
            try:
                self._close_shard()
            except OSError as exc:  # the last buffered bytes are written on close
                raise self._write_failed(exc) from None

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.shards) + (self._in_shard if self._file is not None else 0)


def _batches(texts: Iterable[tuple[str, bool]]) -> Iterator[list[tuple[str, bool]]]:
    """Group (text, starts_a_document) pairs into batches of about BATCH_BYTES of text."""
    batch, size = [], 0
    for item in texts:
        batch.append(item)
        size += len(item[0])
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_into(writer: SplitWriter, tokenizer: Tokenizer, texts: Iterable[tuple[str, bool]], progress=None) -> None:
    """Encode (text, starts_a_document) pairs in parallel batches and append them to `writer` in order."""
    for batch in _batches(texts):
        for (_, starts), ids in zip(batch, tokenizer.encode_batch([t for t, _ in batch])):
            if starts:
                writer.add_document(ids)
            else:
                writer.add_continuation(ids)
        if progress is not None:
            progress(sum(len(t.encode("utf-8")) for t, _ in batch))
    writer.close()


def _curated_texts(curated_dir: Path, split: str) -> Iterator[tuple[str, bool]]:
    from lmsmith.text.curated_dir import iter_split_texts

    for text in iter_split_texts(curated_dir, split):
        yield text, True


def _file_texts(corpus: TextFiles) -> Iterator[tuple[str, bool]]:
    """Each file one document, read in pieces of about a MiB cut at line breaks."""
    for file in corpus.files:
        if file.bytes == 0:  # an empty file is no document
            file.sha256 = hashlib.sha256(b"").hexdigest()
            continue
        reader = TextFiles([file.path])
        for i, piece in enumerate(reader):
            yield piece, i == 0
        file.sha256 = reader.files[0].sha256  # known once the file has been read to the end


def move_tail_to(train: SplitWriter, val: SplitWriter, fraction: float) -> None:
    """Move the last `fraction` of train's ids (at least one) into val, shard files included."""
    total = train.tokens
    n_val = max(1, int(round(total * fraction)))
    if n_val >= total:
        raise UserError(
            f"the text has only {total} tokens, too few to hold out {fraction:.0%} for validation: give more text"
        )
    cut = total - n_val
    root = train.folder.parent
    val.add_document([])  # opens the stream; the tail continues train's last document
    start = 0
    for shard in train.shards:
        end = start + shard["tokens"]
        if end > cut:  # copied shard by shard, so memory stays bounded whatever the corpus size
            ids = np.memmap(root / shard["name"], dtype=train.dtype, mode="r", shape=(shard["tokens"],))
            val.add_continuation(np.array(ids[max(0, cut - start):]))
            del ids
        start = end
    val.close()
    # Shorten train: keep whole shards before the cut, truncate the one it falls in, drop the rest.
    kept, start = [], 0
    for shard in train.shards:
        path, end = root / shard["name"], start + shard["tokens"]
        if end <= cut:
            kept.append(shard)
        elif start < cut:
            with open(path, "rb+") as f:
                f.truncate((cut - start) * train.dtype.itemsize)
            kept.append({**shard, "tokens": cut - start, "sha256": file_sha256(path)})
        else:
            path.unlink()
        start = end
    train.shards = kept




def tokenize_corpus(inputs: list[str], tokenizer_dir: str | Path, out: str | Path, *, val_fraction: float | None = None,
                    shard_tokens: int = SHARD_TOKENS, quiet: bool = False) -> dict:
    """Encode a curated directory or text files into `out/`; returns the manifest (the stage, called from Python)."""
    config = SimpleNamespace(tokenize=parse_section(TokenizeConfig, {"val_fraction": val_fraction,
                                                                     "shard_tokens": shard_tokens}, "tokenize"))
    return run(config, {"data": inputs, "tokenizer": tokenizer_dir}, out, quiet=quiet)


def run(config, inputs: dict, out: str | Path, *, quiet: bool = False) -> dict:
    """The tokenize stage: `inputs["data"]` (a curated directory, or text files and folders) encoded with
    the tokenizer in `inputs["tokenizer"]` into shards in `out/`; returns the manifest."""
    from lmsmith.core.output import input_record, stage_directory, write_manifest

    cfg: TokenizeConfig = config.tokenize
    out = Path(out)
    data = [str(p) for p in (inputs.get("data") or cfg.inputs)]
    if not data:
        raise UserError(
            "nothing to tokenize: name a curated directory or text files (lmsmith tokenize DATA -t TOK -o OUT)"
        )
    tokenizer_dir = inputs["tokenizer"]
    tokenizer = load_tokenizer(tokenizer_dir)
    dtype = token_dtype(tokenizer.vocab_size)
    curated = _curated_dir(data)
    val_fraction = cfg.val_fraction
    if curated is not None and val_fraction is not None:
        raise UserError(f"{curated} is a curated directory with its own val split: leave out tokenize.val_fraction "
                        "(or change split.val_fraction when curating)")
    if curated is None:
        val_fraction = 0.1 if val_fraction is None else val_fraction

    with stage_directory(out, STAGE, reads=[*data, tokenizer_dir]) as tmp, _Progress(quiet) as progress:
        writers = {s: SplitWriter(tmp / s, dtype, cfg.shard_tokens, tokenizer.eot_id) for s in SPLITS}
        if curated is not None:
            source_manifest = read_manifest(curated, "curate")
            inputs_info = {"data": input_record(curated)}
            for split in SPLITS:
                progress.start(split, source_manifest.get("counts", {}).get(f"{split}_bytes"))
                encode_into(writers[split], tokenizer, _curated_texts(curated, split), progress.advance)
        else:
            corpus = TextFiles(data, exclude=[out])
            progress.start("train", corpus.total_bytes)
            encode_into(writers["train"], tokenizer, _file_texts(corpus), progress.advance)
            move_tail_to(writers["train"], writers["val"], val_fraction)
            inputs_info = {"files": [{"path": str(f.path), "bytes": f.bytes, "sha256": f.sha256} for f in corpus.files]}
        if writers["train"].tokens == 0:
            raise UserError("the train split encodes to no tokens at all: give inputs that hold text")
        tokenizer.save(tmp)
        manifest = write_manifest(
            tmp, STAGE,
            config={"dtype": dtype.name, "eot_id": tokenizer.eot_id, "vocab_size": tokenizer.vocab_size,
                    "tokenizer_sha256": tokenizer.sha256, "shard_tokens": cfg.shard_tokens,
                    "val_fraction": val_fraction if curated is None else None,
                    "documents_joined_by": "eot"},
            inputs={**inputs_info, "tokenizer": {"path": str(tokenizer_dir), "sha256": tokenizer.sha256}},
            counts={split: {"tokens": w.tokens, "documents": w.documents, "shards": len(w.shards)}
                    for split, w in writers.items()},
            hashed={shard["name"]: shard["sha256"] for w in writers.values() for shard in w.shards},
            shards={shard["name"]: shard["tokens"] for w in writers.values() for shard in w.shards},
        )
    if not quiet:
        counts = ", ".join(f"{s} {w.tokens:,}" for s, w in writers.items() if w.tokens)
        print(f"tokenized into {out}: {counts} tokens ({dtype.name}, vocab {tokenizer.vocab_size})")
    return manifest


def _curated_dir(inputs: list[str]) -> Path | None:
    """The curated directory among the inputs, if the input is one (it must then be the only one)."""
    curated = [Path(p) for p in inputs if (Path(p) / MANIFEST).is_file() and Path(p).is_dir()]
    if not curated:
        return None
    if len(inputs) > 1:
        raise UserError(f"{curated[0]} is a directory with a manifest (curated data); tokenize it on its own, "
                        "or give only plain text files and folders")
    read_manifest(curated[0], "curate", fix="give a curated directory (from `lmsmith curate`) or plain text files")
    return curated[0]


class _Progress:
    """A bar over the bytes of text encoded, one task per split."""

    def __init__(self, quiet: bool):
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        self.bar = progress_bar(TextColumn("tokenizing {task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), quiet=quiet)
        self.task = None

    def __enter__(self):
        self.bar.start()
        return self

    def start(self, split: str, total_bytes: int | None) -> None:
        self.task = self.bar.add_task(split, total=total_bytes)

    def advance(self, n_bytes: int) -> None:
        self.bar.advance(self.task, n_bytes)

    def __exit__(self, *exc) -> None:
        self.bar.stop()


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class TokensDir:
    """A checked tokens directory: its manifest, dtype and the memory-mapped shards of each split."""

    path: Path
    manifest: dict
    dtype: np.dtype
    vocab_size: int
    eot_id: int
    tokenizer_sha256: str

    def split_tokens(self, split: str) -> int:
        return int(self.manifest["counts"].get(split, {}).get("tokens", 0))

    def shards(self, split: str) -> list[np.ndarray]:
        """The split's shards as read-only memory maps, in stream order."""
        arrays = []
        for name, n_tokens in self.manifest["shards"].items():
            if name.startswith(f"{split}/") and n_tokens:
                try:
                    arrays.append(np.memmap(self.path / name, dtype=self.dtype, mode="r", shape=(n_tokens,)))
                except (OSError, ValueError) as exc:  # permissions, an I/O error, a file changed since opening
                    raise cannot_read(self.path / name, exc if isinstance(exc, OSError) else OSError(str(exc))) \
                        from None
        return arrays

    def tokenizer(self) -> Tokenizer:
        tokenizer = load_tokenizer(self.path)
        if tokenizer.sha256 != self.tokenizer_sha256:
            raise UserError(f"{self.path / TOKENIZER_FILE} is not the tokenizer that made these tokens (its hash "
                            "differs from the manifest's): tokenize the data again")
        return tokenizer


def open_tokens_dir(path: str | Path) -> TokensDir:
    """Open a tokens directory, refusing a missing or foreign manifest and missing or truncated shards."""
    path = Path(path)
    fix = "make it with `lmsmith tokenize DATA -t TOKENIZER -o DIR`"
    manifest = read_manifest(path, STAGE, fix=fix)
    try:
        config = manifest["config"]
        dtype = np.dtype(config["dtype"]).newbyteorder("<")
        vocab_size, eot_id, sha = int(config["vocab_size"]), int(config["eot_id"]), str(config["tokenizer_sha256"])
        shards = {str(k): int(v) for k, v in manifest["shards"].items()}
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path / MANIFEST} lacks the tokenize fields (dtype, vocab_size, shards): {fix}") from None
    if dtype != token_dtype(vocab_size):
        raise UserError(f"{path}: ids stored as {dtype.name} cannot hold a vocabulary of {vocab_size}: tokenize again")
    for name, n_tokens in shards.items():
        file = path / name
        if not file.is_file():
            raise UserError(f"{file} is missing: the tokens directory is incomplete, tokenize again")
        if file.stat().st_size != n_tokens * dtype.itemsize:
            raise UserError(f"{file} holds {file.stat().st_size} bytes but the manifest says {n_tokens} tokens: "
                            "the file is truncated or changed, tokenize again")
    manifest["shards"] = shards
    return TokensDir(path, manifest, dtype, vocab_size, eot_id, sha)


def read_split(tokens: TokensDir, split: str) -> np.ndarray:
    """A whole split as one array in memory (for tests and small evaluations)."""
    shards = tokens.shards(split)
    return np.concatenate(shards) if shards else np.zeros(0, dtype=tokens.dtype)

