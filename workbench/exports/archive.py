"""A written export folder as one zip archive in memory, for a browser download (the app's
exports live on the server; a small folder such as a LoRA adapter is handed to the user)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

# folders above this are not zipped for a download (a merged checkpoint is the model's size)
MAX_ZIP_BYTES = 512 * 2**20


def zip_folder(folder: Path, max_bytes: int = MAX_ZIP_BYTES) -> bytes:
    """The files of `folder` (recursively, paths relative to it, under the folder's name) as zip
    bytes. Raises ValueError when the folder holds more than `max_bytes`."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    if size > max_bytes:
        raise ValueError(f"{folder.name} holds {size / 2**20:.0f} MB, more than the {max_bytes / 2**20:.0f} MB "
                         "a browser download takes; copy it from the server instead.")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, arcname=str(Path(folder.name) / path.relative_to(folder)))
    return buf.getvalue()
