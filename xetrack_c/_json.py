"""xetrack's ``xetrack._json`` helpers: JSON text in and out, as xetrack writes it.

``dumps`` returns compact UTF-8 text (two-space indentation whatever ``indent`` says, as
xetrack's), NaN and infinities as ``null``, datetimes in ISO 8601; ``loads`` reads text or
bytes; a malformed document raises :class:`JSONDecodeError` (the standard library's).
Built on the standard library, so it needs no extra package.
"""

from __future__ import annotations

from json import JSONDecodeError
from json import loads as _loads

__all__ = ["dumps", "loads", "JSONDecodeError"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Union


def dumps(obj: "Any", *, indent: "Optional[int]" = None) -> str:
    """``obj`` as JSON text: compact, or indented by two spaces when ``indent`` is given."""
    from xetrack_c.logging import to_json

    return to_json(obj, indent=None if indent is None else 2)


def loads(s: "Union[str, bytes, bytearray]") -> "Any":
    """The value of the JSON document ``s`` (text or UTF-8 bytes)."""
    return _loads(s)
