"""Annotated dependencies: the app context, the caller, and role and site checks.

Routes declare what they need in their signature, for example ``who: SiteManager`` for a route
under ``/sites/{site_id}`` that changes the site, or ``who: Caller`` plus an explicit
``who.require(...)`` when the site comes from the body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin

from fastapi import Depends, HTTPException, Path, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ampflow.gateway.api.auth import Action, Principal
from ampflow.gateway.api.context import AppContext
from ampflow.gateway.api.errors import invalid
from ampflow.gateway.api.schemas.common import ID_PATTERN

__all__ = [
    "Admin",
    "Caller",
    "Ctx",
    "Limit",
    "Offset",
    "OpsViewer",
    "SiteIdPath",
    "SiteManager",
    "SiteOpsViewer",
    "SiteViewer",
    "Viewer",
    "single_valued_query",
]

_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key (or use Authorization: Bearer)"
)
_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(_ctx)]


def _caller(
    request: Request,
    _key: Annotated[str | None, Security(_api_key)],
    _bearer_token: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    # The auth middleware has already answered 401 when there is no valid key; the security
    # parameters only document the schemes in OpenAPI.
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise HTTPException(401, "an API key is required")
    return principal


Caller = Annotated[Principal, Depends(_caller)]

SiteIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="Site id")]


def _role(action: Action) -> Callable[[Principal], Principal]:
    def check(who: Caller) -> Principal:
        who.require(action)
        return who

    return check


def _site(action: Action) -> Callable[[str, Principal], Principal]:
    def check(site_id: SiteIdPath, who: Caller) -> Principal:
        who.require(action, site_id)
        return who

    return check


Viewer = Annotated[Principal, Depends(_role(Action.VIEW_GRID))]
OpsViewer = Annotated[Principal, Depends(_role(Action.VIEW_OPS))]
Admin = Annotated[Principal, Depends(_role(Action.ADMIN))]
SiteViewer = Annotated[Principal, Depends(_site(Action.VIEW_GRID))]
SiteOpsViewer = Annotated[Principal, Depends(_site(Action.VIEW_OPS))]
SiteManager = Annotated[Principal, Depends(_site(Action.MANAGE))]


def _is_sequence(annotation: Any) -> bool:
    if get_origin(annotation) in (list, set, tuple, frozenset):
        return True
    return any(_is_sequence(arg) for arg in get_args(annotation))


def single_valued_query(request: Request) -> None:
    """422 when a query parameter that takes one value is given several times.

    Starlette would silently keep the last one; an ambiguous request is refused instead.
    """
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    params = request.query_params
    problems = [
        (("query", f.alias), f"given {len(params.getlist(f.alias))} times; expected one value")
        for f in dependant.query_params
        if len(params.getlist(f.alias)) > 1 and not _is_sequence(f.field_info.annotation)
    ]
    if problems:
        raise invalid(problems)


Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Rows to skip")]
