"""One content digest for the whole library: checkpoint manifests, cache keys."""

import hashlib

__all__ = ["digest"]


def digest(*parts):
    """SHA-256 hex digest of ``parts`` in order.

    Parameters
    ----------
    *parts : bytes, bytearray, memoryview or str
        Strings are encoded as UTF-8.

    Returns
    -------
    digest : str
        64 hexadecimal characters.

    Examples
    --------
    >>> digest(b"abc")[:16]
    'ba7816bf8f01cfea'
    >>> digest("a", b"bc") == digest(b"abc")
    True
    """
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()
