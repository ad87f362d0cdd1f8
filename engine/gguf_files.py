"""GGUF transformers (city96's quantized Flux and SD3.5 files, flux1-dev-Q4_K_S.gguf, sd3.5_large-Q8_0.gguf): reading
their tensor table for the catalog and the memory figure, with the `gguf` package (numpy memmap, no torch).

Such a file holds the transformer alone, in the original (BFL / Stability) key layout, each tensor in its own ggml
type; diffusers dequantizes the quantized ones layer by layer as it runs, so the GPU holds them at their file size.
The `gguf` package is optional (pip install noisebrush[gguf]); without it a .gguf file is listed with that reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from noisebrush.engine.errors import UserError

GGUF_SUFFIX = ".gguf"
INSTALL_GGUF = "GGUF files need the gguf package: install noisebrush[gguf]"
FLOAT_TYPES = ("F32", "F16", "BF16")  # diffusers keeps these as plain tensors; the rest are quantized blocks
MAX_GGUF_READS = 30_000  # a Flux GGUF takes about 6 a tensor (~5,000); gguf spends ~10 µs a read in Python


def is_gguf(path: Path) -> bool:
    return path.suffix.lower() == GGUF_SUFFIX


def gguf_available() -> bool:
    return importlib.util.find_spec("gguf") is not None


def gguf_header(path: Path) -> dict:
    """A GGUF file's tensor table in the shape of a safetensors header, so the code that tells families and variants
    apart serves both: {name: {"shape": [torch order], "dtype": ggml type name, "n_bytes": …}, "__metadata__": {…}}.
    UserError when gguf is not installed or the file is not a GGUF file."""
    if not path.is_file():  # a FIFO would block the reader for ever
        raise UserError(f"{path.name} is not a regular file; not opened")
    if not gguf_available():
        raise UserError(INSTALL_GGUF)
    from gguf import GGUFReader

    class TooMany(Exception):
        pass

    class WholeReads(GGUFReader):
        """gguf reads past the end of the file as empty arrays: an array field counting 2⁶⁴ items of a 45-byte file
        then loops for ever, growing. Here a read past the end is an error, and the reads are counted: each costs
        Python time, and an SD3 or Flux transformer file needs a few thousand (a language model's vocabulary, or a
        crafted file, millions)."""

        reads = 0

        def _get(self, offset: int, dtype: Any, count: int = 1, *args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            if self.reads > MAX_GGUF_READS:
                raise TooMany
            arr = super()._get(offset, dtype, count, *args, **kwargs)
            if len(arr) < int(count):
                raise ValueError("the file ends inside a field")
            return arr

    try:
        reader = WholeReads(path)
        header: dict = {
            t.name: {"shape": [int(s) for s in reversed(t.shape)], "dtype": t.tensor_type.name, "n_bytes": int(t.n_bytes)}
            for t in reader.tensors
        }  # ggml lists dimensions innermost first: reversed, they read as torch's
        arch = reader.fields.get("general.architecture")
        header["__metadata__"] = {"general.architecture": str(arch.contents()) if arch is not None else ""}
    except (ValueError, KeyError, IndexError, OSError, TypeError, OverflowError) as exc:  # a damaged or truncated file
        reason = " ".join(str(exc).split())[:200]  # gguf quotes the file's own names: one line, and not all of it
        raise UserError(f"{path.name} is not a valid GGUF file ({reason}); it may be damaged or incomplete") from None
    except RecursionError:  # gguf reads arrays of arrays recursively: a file can nest them past Python's stack
        raise UserError(f"{path.name} is not a valid GGUF file (its fields nest too deep); not opened") from None
    except TooMany:
        raise UserError(f"{path.name} holds far more metadata than an SD3 or Flux transformer file; not read") from None
    return header


def quant_types(header: dict) -> str:
    """The quantized types a file uses, most common first ("Q4_K, Q5_K"), or "F16" for an unquantized one."""
    counts: dict[str, int] = {}
    for name, entry in header.items():
        if name != "__metadata__" and entry["dtype"] not in FLOAT_TYPES:
            counts[entry["dtype"]] = counts.get(entry["dtype"], 0) + entry["n_bytes"]
    return ", ".join(sorted(counts, key=counts.get, reverse=True)) or "F16"  # type: ignore[arg-type]


def gguf_weight_bytes(path: Path) -> int:
    """What the transformer takes on the GPU: its tensors at their stored (quantized) size; 0 when unreadable."""
    try:
        header = gguf_header(path)
    except UserError:
        return 0
    return sum(e["n_bytes"] for k, e in header.items() if k != "__metadata__")
