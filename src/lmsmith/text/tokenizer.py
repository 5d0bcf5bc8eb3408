"""Tokenizers: text <-> token ids, saved as one `tokenizer.json` the whole ecosystem reads.

A tokenizer is a Hugging Face `tokenizers.Tokenizer` (normalizer -> pre-tokenizer -> model ->
decoder) plus the name of its end-of-text token, which separates documents in training data.
Two kinds are trained here, and for both `decode(encode(s)) == s` for every Unicode string:

    bpe    byte-level BPE, as in GPT-2: text becomes UTF-8 bytes, each byte written as one of 256
           printable stand-in characters, and the most frequent neighbouring pairs are merged
           into new tokens until the vocabulary is full.
    char   one token per character seen in training, for teaching. A character never seen is
           spelt as its UTF-8 bytes with the tokens <0x00> .. <0xFF> ("byte fallback").

Special tokens (always `<|endoftext|>`, plus any extra ones) are single ids that are matched
before anything else, so they are never split, and no learned token ever holds a piece of one.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from lmsmith.core.atomic import write_json, write_text
from lmsmith.core.errors import UserError, cannot_read, check_readable
from lmsmith.core.input_files import check_input_path
from lmsmith.core.json_file import read_json
from lmsmith.core.manifest import MANIFEST, read_manifest
from lmsmith.core.progress import progress_bar
from lmsmith.schema.text import BYTE_ALPHABET, EOT, TokenizerConfig, check_vocab_size, special_token_list

STAGE = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"  # read by transformers.AutoTokenizer
KINDS = ("bpe", "char")
_BYTE_TOKEN = re.compile(r"<0x([0-9A-F]{2})>")


def _byte_level_stand_ins() -> dict[str, int]:
    """The printable character the ByteLevel pre-tokenizer writes for each byte, mapped back to the byte.

    Bytes that are already visible Latin-1 characters stand for themselves; the others (controls,
    space, a few invisible ones) are moved up to U+0100 and beyond, in byte order.
    """
    visible = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, moved = {}, 0
    for byte in range(BYTE_ALPHABET):
        if byte in visible:
            table[chr(byte)] = byte
        else:
            table[chr(BYTE_ALPHABET + moved)] = byte
            moved += 1
    return table


_BYTE_OF_STAND_IN = _byte_level_stand_ins()


# ---------------------------------------------------------------------------------------------
# the tokenizer


@dataclass(frozen=True)
class SpecialTokens:
    """The special tokens a model was trained with besides its end-of-text token, and whether its prompts
    start with BOS or end with EOS. They travel with the model (tokenizer_config.json, GGUF metadata) so a
    converted model is prompted as its makers prompted it. lmsmith's own tokenizers have none of them."""

    bos: str | None = None
    pad: str | None = None
    unk: str | None = None
    add_bos: bool = False
    add_eos: bool = False


class Tokenizer:
    """A trained tokenizer, its end-of-text token and the model's other special tokens."""

    def __init__(self, backend: HFTokenizer, eot_token: str = EOT, kind: str = "bpe", chat_template: str | None = None,
                 specials: SpecialTokens | None = None):
        self.backend = backend
        self.kind = kind
        self.eot_token = eot_token
        self.chat_template = chat_template  # Jinja, as transformers reads it (see lmsmith.text.chat_template)
        eot_id = backend.token_to_id(eot_token)
        if eot_id is None:
            raise UserError(f"the tokenizer has no end-of-text token {eot_token!r}: retrain it, or name its token")
        self.eot_id = eot_id
        specials = specials or SpecialTokens()
        for role in ("bos", "pad", "unk"):
            token = getattr(specials, role)
            if token is not None and backend.token_to_id(token) is None:
                raise UserError(f"the tokenizer has no {role} token {token!r}: fix {role}_token in {TOKENIZER_CONFIG}")
        self.specials = specials
        self._sha256: str | None = None
        self._byte_level: bool | None = None

    def special_id(self, role: str) -> int | None:
        """The id of the model's `role` token (bos, eos, pad, unk), or None if it has none."""
        token = self.eot_token if role == "eos" else getattr(self.specials, role)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def sha256(self) -> str:
        """A hash of the serialised tokenizer (the bytes `save` writes): equal hashes, equal ids."""
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self._json().encode("utf-8")).hexdigest()
        return self._sha256

    @property
    def special_tokens(self) -> list[str]:
        return [t.content for _, t in sorted(self.backend.get_added_tokens_decoder().items()) if t.special]

    def encode(self, text: str, what: str = "the prompt") -> list[int]:
        """Token ids of `text`; `what` names the text in the UserError for one that is not valid UTF-8."""
        try:
            return self.backend.encode(text, add_special_tokens=False).ids
        except TypeError:  # tokenizers refuses a str holding lone surrogates ("TextInputSequence must be str")
            if isinstance(text, str):
                check_text_encodable(text, what)
            raise

    def encode_batch(self, texts: list[str], what: str = "the text") -> list[list[int]]:
        try:
            return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]
        except TypeError:
            for i, text in enumerate(texts):
                if isinstance(text, str):
                    check_text_encodable(text, f"{what} (item {i} of the batch)")
            raise

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes one token stands for; a piece of a multi-byte character is not valid UTF-8."""
        token = self.backend.id_to_token(token_id)
        if token is None:
            raise UserError(f"token id {token_id} is outside the vocabulary (0 .. {self.vocab_size - 1})")
        if token_id in self.backend.get_added_tokens_decoder():
            return token.encode("utf-8")
        if self._is_byte_level() and all(c in _BYTE_OF_STAND_IN for c in token):
            return bytes(_BYTE_OF_STAND_IN[c] for c in token)
        if match := _BYTE_TOKEN.fullmatch(token):
            return bytes([int(match[1], 16)])
        return self.backend.decode([token_id], skip_special_tokens=False).encode("utf-8")

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json and a tokenizer_config.json naming the special tokens for transformers."""
        directory = Path(directory)
        write_text(directory / TOKENIZER_FILE, self._json())
        specials = self.specials
        write_json(directory / TOKENIZER_CONFIG, {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": self.eot_token,
            # A tokenizer of our own has no BOS; GPT-2's convention (BOS = end-of-text) is what transformers expects.
            "bos_token": specials.bos or self.eot_token,
            **({"pad_token": specials.pad} if specials.pad else {}),
            **({"unk_token": specials.unk} if specials.unk else {}),
            "add_bos_token": specials.add_bos,
            "add_eos_token": specials.add_eos,
            "model_max_length": 1_000_000_000,
            # transformers would otherwise "tidy" spaces before punctuation on decode and break round trips
            "clean_up_tokenization_spaces": False,
            "lmsmith_kind": self.kind,
            **({"chat_template": self.chat_template} if self.chat_template else {}),
        })

    def _json(self) -> str:
        return self.backend.to_str(pretty=True)

    def _is_byte_level(self) -> bool:
        if self._byte_level is None:
            decoder = json.loads(self.backend.to_str()).get("decoder") or {}
            parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
            self._byte_level = any(part.get("type") == "ByteLevel" for part in parts)
        return self._byte_level


def check_text_encodable(text: str, what: str = "the prompt") -> None:
    """Refuse text that is not valid Unicode: lone surrogates, which is how Python hands over the bytes
    of a command-line argument that are not UTF-8 (surrogateescape), and which no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        escaped = 0xDC80 <= ord(bad) <= 0xDCFF  # a byte that was not UTF-8, kept by surrogateescape
        detail = f"byte 0x{ord(bad) - 0xDC00:02x}" if escaped else f"lone surrogate U+{ord(bad):04X}"
        raise UserError(f"{what} is not valid UTF-8 text ({detail} at character {exc.start}): "
                        "give it as UTF-8 (e.g. convert it with `iconv -t utf-8`)") from None


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load the tokenizer of a tokenizer, model or run directory."""
    directory = Path(directory)
    try:  # exists() and is_file() raise PermissionError inside a folder that cannot be searched
        if directory.is_file() and directory.name == TOKENIZER_FILE:
            directory = directory.parent
        if not directory.exists():
            raise UserError(f"tokenizer directory {directory} does not exist: "
                            "check the path, or train one with `lmsmith tokenizer train`")
        file = directory / TOKENIZER_FILE
        if not file.is_file() and (directory / "model" / TOKENIZER_FILE).is_file():
            directory, file = directory / "model", directory / "model" / TOKENIZER_FILE
        if not file.is_file():
            raise UserError(f"{directory} has no {TOKENIZER_FILE}: train one with `lmsmith tokenizer train`")
    except OSError as exc:
        raise cannot_read(exc.filename or directory, exc) from None
    check_readable(file)  # tokenizers reports an unreadable file as a bare "Permission denied"
    try:
        backend = HFTokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises bare Exceptions for malformed JSON and unreadable files
        raise UserError(
            f"{file} is not a valid tokenizer ({str(exc).splitlines()[0]}): retrain or restore it"
        ) from None
    eot, kind, specials = EOT, "bpe", SpecialTokens()
    config_file = directory / TOKENIZER_CONFIG
    if config_file.is_file():
        config = read_json(config_file, fix="restore it or delete it")
        eot = token_named(config.get("eos_token")) or EOT
        kind = config.get("lmsmith_kind", kind)
        specials = special_tokens_of(config, backend, eot)
    from lmsmith.text.chat_template import read_chat_template

    return Tokenizer(backend, eot_token=eot, kind=kind, chat_template=read_chat_template(directory), specials=specials)


def token_named(value) -> str | None:
    """The token text of a tokenizer_config entry: a string, or the AddedToken dict transformers may store."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def special_tokens_of(config: dict, backend: HFTokenizer, eot: str) -> SpecialTokens:
    """The BOS/PAD/UNK tokens and add-BOS/add-EOS flags a tokenizer_config.json (ours or a Hugging Face one)
    names. A BOS equal to the end-of-text token is GPT-2's convention, not a token of its own. Without
    add_bos_token the tokenizer.json's post-processor tells whether transformers puts BOS first."""
    def known(key: str) -> str | None:
        token = token_named(config.get(key))
        return token if token is not None and backend.token_to_id(token) is not None else None

    bos = known("bos_token")
    add_bos, add_eos = config.get("add_bos_token"), config.get("add_eos_token")
    if not isinstance(add_bos, bool) or not isinstance(add_eos, bool):
        added = _post_processor_adds(backend)
        add_bos = add_bos if isinstance(add_bos, bool) else bos is not None and added[0] == bos
        add_eos = add_eos if isinstance(add_eos, bool) else added[1] == eot
    if bos == eot and not add_bos:
        bos = None
    return SpecialTokens(bos=bos, pad=known("pad_token"), unk=known("unk_token"), add_bos=add_bos and bos is not None,
                         add_eos=bool(add_eos))


def _post_processor_adds(backend: HFTokenizer) -> tuple[str | None, str | None]:
    """The special tokens a tokenizer.json's TemplateProcessing puts before and after a single text."""
    post = json.loads(backend.to_str()).get("post_processor") or {}
    parts = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for part in parts:
        if part.get("type") == "TemplateProcessing":
            single = part.get("single") or []
            names = [(item.get("SpecialToken") or {}).get("id") if "SpecialToken" in item else "$" for item in single]
            first = names[0] if names and names[0] != "$" else None
            last = names[-1] if names and names[-1] != "$" else None
            return first, last
    return None, None


# ---------------------------------------------------------------------------------------------
# training text from files and folders


@dataclass
class TextFile:
    path: Path
    bytes: int
    sha256: str = ""  # known once the file has been read


class TextFiles:
    """The text of files and folders (folders searched recursively), for training a tokenizer.

    Iterating reads each file once, as strict UTF-8, in chunks of about a MiB that end at a line
    break, and records each file's hash for the manifest. Inside a folder, hidden files and
    folders are skipped, as is anything under `exclude` (the output directory).
    """

    chunk_bytes = 1 << 20

    def __init__(self, inputs: Iterable[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()):
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        self.inputs = [str(p) for p in inputs]
        if not self.inputs:
            raise UserError("no input files given: name text files or folders to train on")
        self.files = _find_files(self.inputs, {Path(p).resolve() for p in exclude})
        self.total_bytes = sum(f.bytes for f in self.files)
        self.bytes_read = 0
        if self.total_bytes == 0:
            raise UserError(f"{self}: all empty, there is no text to train on: give files that hold text")

    def __str__(self) -> str:
        names = [str(f.path) for f in self.files[:3]] + (["..."] if len(self.files) > 3 else [])
        return f"{len(self.files)} input file{'s' if len(self.files) != 1 else ''} ({', '.join(names)})"

    def __iter__(self) -> Iterator[str]:
        self.bytes_read = 0
        for file in self.files:
            yield from self._read(file)

    def _read(self, file: TextFile) -> Iterator[str]:
        digest = hashlib.sha256()
        decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")  # -sig: drop a leading byte-order mark
        offset, carry = 0, ""
        try:
            with open(file.path, "rb") as f:
                while block := f.read(self.chunk_bytes):
                    digest.update(block)
                    pending = len(decoder.getstate()[0])
                    try:
                        text = carry + decoder.decode(block)
                    except UnicodeDecodeError as exc:
                        raise _not_utf8(file.path, offset - pending + exc.start, exc.object[exc.start]) from None
                    offset += len(block)
                    self.bytes_read += len(block)
                    # Cut at a line break so no word is split between two chunks (and a line
                    # longer than a few chunks anyway, so memory stays bounded).
                    cut = text.rfind("\n") + 1
                    if cut == 0 and len(text) >= 4 * self.chunk_bytes:
                        cut = len(text)
                    carry = text[cut:]
                    if cut:
                        yield text[:cut]
        except OSError as exc:
            raise UserError(f"cannot read {file.path}: {exc.strerror or exc}: check its permissions") from None
        try:
            carry += decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise _not_utf8(file.path, offset - len(exc.object) + exc.start, exc.object[exc.start]) from None
        if carry:
            yield carry
        file.sha256 = digest.hexdigest()


def _not_utf8(path: Path, offset: int, byte: int) -> UserError:
    return UserError(
        f"{path} is not UTF-8 text (byte 0x{byte:02x} at offset {offset}): convert it to UTF-8 "
        "(e.g. `iconv -f latin1 -t utf-8`), clean it first with `lmsmith curate`, or leave it out"
    )


def _find_files(inputs: list[str], excluded: set[Path]) -> list[TextFile]:
    found: list[TextFile] = []
    seen: set[Path] = set()
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            candidates = _files_under(path, excluded)
            if not candidates:
                raise UserError(
                    f"folder {path} holds no files (hidden ones are skipped): give a folder with text files"
                )
        elif path.exists():
            candidates = [path]
        else:
            raise UserError(f"input {name} does not exist: check the path")
        for candidate in candidates:
            check_input_path(candidate)  # a FIFO or a device would hang the read; say which file before reading
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                found.append(TextFile(candidate, candidate.stat().st_size))
    return found


def _files_under(folder: Path, excluded: set[Path]) -> list[Path]:
    def refuse(exc: OSError) -> None:
        raise UserError(f"cannot read folder {exc.filename}: {exc.strerror}: check its permissions")

    files = []
    for root, dirs, names in os.walk(folder, onerror=refuse):
        # Sorted, so that the same folder always gives the same tokenizer.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(root, d).resolve() not in excluded)
        files += [Path(root, n) for n in sorted(names) if not n.startswith(".")]
    return files


# ---------------------------------------------------------------------------------------------
# training






def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = (),
              show_progress: bool = True) -> Tokenizer:
    """Train a byte-level BPE tokenizer on texts (strings, or `TextFiles(paths)` for files and folders).

    `vocab_size` counts everything: 256 byte tokens, the special tokens and the learned merges.
    A small corpus may run out of pairs to merge first; the vocabulary is then smaller.
    """
    specials = special_token_list(special_tokens)
    check_vocab_size(vocab_size, specials)
    _refuse_single_text(texts)
    backend = HFTokenizer(models.BPE())
    # No normalizer: the text is kept exactly. No prefix space: " a" and "a" stay different texts.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
    )
    with _TrainingProgress(texts, show_progress, last_step="computing merges") as progress:
        backend.train_from_iterator(_training_pieces(texts, specials, progress), trainer)
    return Tokenizer(backend, EOT, kind="bpe")


def train_char(texts: Iterable[str], vocab_size: int | None = None, special_tokens: Iterable[str] = (),
               show_progress: bool = True) -> Tokenizer:
    """Train a character-level tokenizer: one token per character seen, in code point order.

    Ids 0, 1, ... are the characters, then come the 256 byte tokens that spell any unseen
    character, then the special tokens. With `vocab_size`, only the most frequent characters
    that fit are kept; the others are spelt in bytes.
    """
    specials = special_token_list(special_tokens)
    if vocab_size is not None:
        check_vocab_size(vocab_size, specials)
    _refuse_single_text(texts)
    counts: Counter[str] = Counter()
    with _TrainingProgress(texts, show_progress, last_step="building the vocabulary") as progress:
        for piece in _training_pieces(texts, specials, progress):
            counts.update(piece)
    for token in specials:  # a one-character special token wins over the plain character
        counts.pop(token, None)
    room = None if vocab_size is None else vocab_size - BYTE_ALPHABET - len(specials)
    kept = sorted(sorted(counts, key=lambda c: (-counts[c], c))[:room])
    vocab = {c: i for i, c in enumerate(kept)}
    vocab.update({f"<0x{b:02X}>": len(kept) + b for b in range(BYTE_ALPHABET)})
    # A BPE model without merges splits text into characters; byte_fallback spells unknown ones in bytes.
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, ignore_merges=False))
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens(specials)
    return Tokenizer(backend, EOT, kind="char")


def _refuse_single_text(texts) -> None:
    if isinstance(texts, (str, bytes, os.PathLike)):
        raise TypeError("pass an iterable of texts, e.g. [text], or TextFiles([path]) for files and folders")


def _training_pieces(texts: Iterable[str], specials: list[str], progress: _TrainingProgress) -> Iterator[str]:
    """The texts cut apart at special tokens, which encoding matches first, so training must not see them.

    Raises UserError at the end if there was no text at all, only whitespace.
    """
    at_special = re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)))
    has_text = False
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"training texts must be str, got {type(text).__name__}")
        has_text = has_text or bool(text) and not text.isspace()
        yield from (piece for piece in at_special.split(text) if piece)
        progress.advance()
    progress.reading_done()
    if not has_text:
        source = texts if isinstance(texts, TextFiles) else "the training texts"
        raise UserError(f"{source}: no text to train on, only whitespace or nothing: give files that hold text")


class _TrainingProgress:
    """A bar over the bytes of `TextFiles`, or over the count of other texts."""

    def __init__(self, texts: Iterable[str], show: bool, last_step: str):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.texts, self.last_step = texts, last_step
        head = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
        if isinstance(texts, TextFiles):
            columns, total = [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()], texts.total_bytes
        else:
            total = len(texts) if hasattr(texts, "__len__") else None
            columns = [MofNCompleteColumn(), TextColumn("texts"), TimeElapsedColumn()]
        self.bar = progress_bar(*head, *columns, quiet=not show)
        self.task = self.bar.add_task("reading text", total=total)

    def __enter__(self) -> _TrainingProgress:
        self.bar.start()
        return self

    def advance(self) -> None:
        if isinstance(self.texts, TextFiles):
            self.bar.update(self.task, completed=self.texts.bytes_read)
        else:
            self.bar.advance(self.task)

    def reading_done(self) -> None:
        self.bar.update(self.task, description=self.last_step)

    def __exit__(self, *exc) -> None:
        self.bar.stop()


# ---------------------------------------------------------------------------------------------
# the `lmsmith tokenizer` verbs




def take_mb(texts: Iterable[str], mb: float | None) -> Iterator[str]:
    """The texts, stopping once about `mb` megabytes have passed (all of them when mb is None)."""
    limit, seen = None if mb is None else mb * 1e6, 0
    for text in texts:
        yield text
        seen += len(text.encode("utf-8"))
        if limit is not None and seen >= limit:
            return


def training_text(data: list[str], exclude: Path) -> tuple[Iterable[str], dict, str]:
    """What a tokenizer learns from: the train split of a curated directory, or text files and folders.

    Returns the texts, how the manifest names them, and a short description for the summary.
    """
    from lmsmith.core.output import input_record
    from lmsmith.text.curated_dir import iter_split_texts

    curated = [p for p in data if (Path(p) / MANIFEST).is_file()]
    if curated:
        if len(data) > 1:
            raise UserError(f"{curated[0]} is a curated directory; train on it alone, or give only plain text files")
        read_manifest(curated[0], "curate", fix="give a curated directory (from `lmsmith curate`) or text files")
        return iter_split_texts(Path(curated[0]), "train"), {"data": input_record(curated[0])}, \
            f"the train split of {curated[0]}"
    corpus = TextFiles(data, exclude=[exclude])
    files = {"files": [{"path": str(f.path), "bytes": f.bytes} for f in corpus.files]}
    return corpus, files, f"{len(corpus.files)} file(s), {corpus.total_bytes:,} bytes"


def run(config, inputs: dict, out: str | Path, *, quiet: bool = False) -> dict:
    """The tokenizer stage: train on `inputs["data"]` into `out/`; returns the manifest."""
    from lmsmith.core.output import stage_directory, write_manifest

    cfg: TokenizerConfig = config.tokenizer
    out = Path(out)
    data = [str(p) for p in inputs["data"]]
    with stage_directory(out, STAGE, reads=data) as tmp:
        texts, read, described = training_text(data, exclude=out)
        corpus = texts if isinstance(texts, TextFiles) else None
        if cfg.sample_mb is not None:
            texts = take_mb(texts, cfg.sample_mb)
        train = train_bpe if cfg.kind == "bpe" else train_char
        tokenizer = train(texts, cfg.vocab_size, cfg.special_tokens, show_progress=not quiet)
        tokenizer.save(tmp)
        counts = {"vocab_size": tokenizer.vocab_size, "special_tokens": len(tokenizer.special_tokens)}
        if corpus is not None:  # hashes are known once the files have been read
            read = {"files": [{"path": str(f.path), "bytes": f.bytes, "sha256": f.sha256} for f in corpus.files]}
            counts.update(files=len(corpus.files), bytes=corpus.total_bytes)
        manifest = write_manifest(tmp, STAGE, config=dataclasses.asdict(cfg), inputs=read, counts=counts)
    if not quiet:
        _print_summary(tokenizer, described, out, cfg.vocab_size)
    return manifest


def _print_summary(tokenizer: Tokenizer, described: str, out: Path, vocab_size: int | None) -> None:
    from rich.console import Console

    what = "byte-level BPE" if tokenizer.kind == "bpe" else "character-level"
    line = (f"{what} tokenizer, {tokenizer.vocab_size} tokens ({len(tokenizer.special_tokens)} special), "
            f"trained on {described} -> {out}")
    if tokenizer.kind == "bpe" and vocab_size is not None and tokenizer.vocab_size < vocab_size:
        line += f"\n(asked for {vocab_size}: the text ran out of pairs to merge; more text gives more tokens)"
    Console(highlight=False, soft_wrap=True).print(line, markup=False)


def run_show(config, inputs: dict, out=None, *, quiet: bool = False) -> list[int]:
    """`lmsmith tokenizer show`: how a text splits into pieces and ids; writes nothing."""
    return show_pieces(load_tokenizer(inputs["tokenizer"]), inputs["text"])


def show_pieces(tokenizer: Tokenizer, text: str, console=None) -> list[int]:
    """Print how `text` splits into tokens: one row per token with its id and the text it stands for."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console(highlight=False)
    ids = tokenizer.encode(text, what="the text")
    specials = set(tokenizer.backend.get_added_tokens_decoder())
    table = Table("#", "id", "piece", box=None, pad_edge=False)
    for position, token_id in enumerate(ids):
        table.add_row(
            str(position), str(token_id), _readable_piece(tokenizer.token_bytes(token_id), token_id in specials)
        )
    console.print(f"{tokenizer.kind} tokenizer, {tokenizer.vocab_size} tokens", markup=False)
    console.print(table)
    n_bytes = len(text.encode("utf-8"))
    per_token = f", {n_bytes / len(ids):.2f} bytes per token" if ids else ""
    console.print(f"{len(ids)} tokens for {len(text)} characters ({n_bytes} bytes){per_token}", markup=False)
    console.print(Text(f"ids: {ids}"))
    if any(not _is_utf8(tokenizer.token_bytes(i)) for i in ids):
        console.print(Text("\\x.. pieces are bytes of a character that is split over several tokens", style="dim"))
    return ids


def _readable_piece(data: bytes, special: bool):
    from rich.text import Text

    if special:
        return Text(data.decode("utf-8"), style="bold")
    if _is_utf8(data):
        return Text(repr(data.decode("utf-8")))  # quotes show leading spaces; escapes show control characters
    return Text("".join(f"\\x{b:02x}" for b in data), style="dim")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
