"""Errors whose message is meant for the person using the app."""


class UserError(Exception):
    """A problem the user can fix (bad file, bad setting, wrong model). The message is shown as is."""


def first_line(exc: BaseException) -> str:
    """A library's exception as one line for a message (its type where it says nothing)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class GatedError(UserError):
    """The Hub wants a token, or its licence accepted, before it gives a repo's files."""

    def __init__(self, what: str, refused: bool = False) -> None:
        super().__init__(f"{what} is gated: accept its licence on huggingface.co, then give Noisebrush your Hugging "
                         f"Face token" + (" (the one given was refused)" if refused else ""))  # fmt: skip
