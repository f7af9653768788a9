"""User text as an extra corpus: a .txt file with one document per line, or a folder of .txt."""

from __future__ import annotations

from pathlib import Path

from workbench.corpus.documents import Corpus, Document

MAX_TEXT_BYTES = 200 * 1024 * 1024


def load_text_corpus(path: Path, corpus_id: str | None = None) -> Corpus:
    """One document per non-empty line of a .txt file, or one per .txt file of a folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Text corpus {path} does not exist.")
    docs: list[Document] = []
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ValueError(f"Folder {path} has no .txt files.")
        for i, f in enumerate(files):
            text = _read_text(f).strip()
            if text:
                docs.append(Document(doc_id=i, title=f.stem, text=text, topic="user"))
    else:
        for i, line in enumerate(_read_text(path).splitlines()):
            line = line.strip()
            if line:
                docs.append(Document(doc_id=i, title=f"{path.stem}:{i + 1}", text=line, topic="user"))
    if not docs:
        raise ValueError(f"Text corpus {path} is empty: no non-blank document found.")
    return Corpus(corpus_id=corpus_id or f"text:{path.name}", documents=docs)


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise ValueError(f"{path} is larger than {MAX_TEXT_BYTES // 2**20} MB.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err}).") from err
