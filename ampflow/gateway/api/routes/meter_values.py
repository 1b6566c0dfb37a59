"""``/meter-values``: bulk ingest from meters and simulators (stations report through OCPP)."""

from __future__ import annotations

from fastapi import APIRouter

from ampflow.gateway.api.auth import Action
from ampflow.gateway.api.deps import Caller, Ctx
from ampflow.gateway.api.errors import invalid, responses
from ampflow.gateway.api.schemas.sessions import MeterBatch, MeterBatchResult
from ampflow.gateway.db.errors import ConflictError
from ampflow.gateway.db.repo import meter, sessions

router = APIRouter(prefix="/meter-values", tags=["meter-values"])


@router.post("", status_code=201, response_model=MeterBatchResult, responses=responses(409))
def post_meter_values(body: MeterBatch, ctx: Ctx, who: Caller) -> MeterBatchResult:
    """Store a batch in one transaction (all or nothing); values already stored are ignored,
    so a retried batch is harmless."""
    problems = [
        (("body", "values", i, "unit"), msg)
        for i, v in enumerate(body.values)
        if (msg := v.unit_problem()) is not None
    ]
    if problems:
        raise invalid(problems)
    refs = [sessions.parse_connector_id(v.connector_id) for v in body.values]
    who.require_all(Action.MANAGE, {r.site_id for r in refs})
    with ctx.db.write() as s:
        pks = sessions.resolve_connectors(s, refs)
        samples = []
        for i, (ref, v) in enumerate(zip(refs, body.values, strict=True)):
            if ref not in pks:
                raise ConflictError(
                    f"connector {str(ref)!r} does not exist",
                    loc=("body", "values", i, "connector_id"),
                )
            code, phase, ts, value = v.canonical()
            samples.append(meter.MeterSample(pks[ref], ts, code, value, phase))
        meter.ingest_meter_values(s, samples)
    return MeterBatchResult(accepted=len(samples))
