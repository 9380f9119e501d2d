"""Text sources and their cutting into fixed-length token samples."""

from .sources import Document, TextSource
from .windows import Sample, token_windows

__all__ = ["Document", "TextSource", "Sample", "token_windows"]
