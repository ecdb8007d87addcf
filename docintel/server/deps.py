"""Shared route dependencies as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from docintel.core.service import DocumentService


def get_service(request: Request) -> DocumentService:
    service: DocumentService = request.app.state.service
    return service


ServiceDep = Annotated[DocumentService, Depends(get_service)]
