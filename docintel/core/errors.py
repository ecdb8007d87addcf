"""One base error; each subclass has a machine code and a default sentence.

Core code raises these; only the edges translate them (HTTP status in the
server's exception handler, exit status in the CLI).
"""

from __future__ import annotations


class DocintelError(Exception):
    """Something went wrong in docintel."""

    code = "error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        super().__init__(self.message)


class RejectedUpload(DocintelError):
    """The file was not accepted."""

    code = "rejected"


class EmptyFile(RejectedUpload):
    """The file is empty."""

    code = "empty_file"


class UnsupportedFileType(RejectedUpload):
    """Only PDF (.pdf) and plain text (.txt) files are accepted."""

    code = "unsupported_type"


class FileTooLarge(RejectedUpload):
    """The file is larger than the upload limit."""

    code = "file_too_large"


class UnreadableFile(RejectedUpload):
    """The file could not be read."""

    code = "unreadable_file"


class ExtractionFailed(DocintelError):
    """No text could be extracted from the document."""

    code = "extraction_failed"


class AnalysisFailed(DocintelError):
    """The document could not be analysed."""

    code = "analysis_failed"


class DocumentNotFound(DocintelError):
    """No such document."""

    code = "not_found"
