"""The one exception type a stage's user sees as a plain message instead of a traceback."""


class PipelineError(Exception):
    """Bad input or a failed step; the message says what, where, and how to fix it."""


def utf8_text(value: str, where: str) -> str:
    """``value`` itself if it is UTF-8 text; else one line naming ``where`` and the first bad
    byte (Python holds a command line's undecodable bytes as lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if "\udc80" <= bad <= "\udcff" else repr(bad)
        raise PipelineError(
            f"{where}: {byte} at character {exc.start + 1} is not UTF-8 text; give it in UTF-8"
        ) from None
    return value
