"""Keep the libraries' own chatter (deprecation warnings, "Expected types…", loading progress bars) out of the
user's terminal: Noisebrush reports its own progress. NOISEBRUSH_VERBOSE=1 (the CLI's --verbose) brings it back."""

from __future__ import annotations

import logging
import os
import warnings


def verbose() -> bool:
    return os.environ.get("NOISEBRUSH_VERBOSE", "") not in ("", "0")


def quiet_libraries() -> None:
    """Call before diffusers or transformers load a model (the engine thread does, once)."""
    if verbose():
        return
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(diffusers|transformers|huggingface_hub)\b")
    warnings.filterwarnings("ignore", message=r".*torch_dtype.*deprecated")
    for name in ("diffusers", "transformers", "huggingface_hub", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:  # a backend without them has nothing to quiet
        pass
