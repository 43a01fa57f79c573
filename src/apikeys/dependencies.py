from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from apikeys.schemas import Scope
from apikeys.service import Principal, authenticate
from infra.errors import Forbidden, Unauthorized
from infra.resources import Resources, get_resources

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer sb_...`")


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        resources: Annotated[Resources, Depends(get_resources)],
    ) -> Principal:
        if credentials is None or not credentials.credentials:
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        admin = resources.settings.admin_api_key
        async with resources.sessionmaker() as session:
            principal = await authenticate(
                session, credentials.credentials, admin.get_secret_value() if admin else None
            )
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        if not principal.allows(scope):
            raise Forbidden(f"this API key lacks the '{scope.value}' scope")
        request.state.principal = principal
        return principal

    return dependency


RequireAdmin = Annotated[Principal, Depends(require_scope(Scope.ADMIN))]
RequireSend = Annotated[Principal, Depends(require_scope(Scope.SEND))]
RequireRead = Annotated[Principal, Depends(require_scope(Scope.READ))]
