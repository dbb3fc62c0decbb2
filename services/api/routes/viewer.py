"""``GET /api/studies/{uid}/ohif``: open one study in the OHIF viewer, for a signed-in browser.

The link the worklist puts behind a study. The browser's session (the sign-in
cookie, :func:`~services.api.routes.signin.current_session`) says who asks; the
answer is a redirect to ``/pacs-viewer/viewer?StudyInstanceUIDs=<uid>&token=<t>``
where ``t`` is a signed URL's token for that study alone, minted for that user
(``sub``) and role, valid ``NEURONOVA_VIEWER_TOKEN_TTL`` seconds or until the
session signs out (its ``pjti`` is the session's, revoked at sign-out). OHIF sends it as
``Authorization: Bearer`` on every DICOMweb request and the guard holds it to the
study exactly as it would in a URL, so the guard's audit rows name the user. The
link itself is audited too (``reason=ohif_open``).

Not signed in (or the session ended): a redirect to the sign-in page, which comes
back here. A token is only ever in the ``Location`` of this answer (``no-store``);
nginx's access log keeps paths only.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from neuronova_lib.db.browser_sessions import session_token_parent
from neuronova_lib.security.roles import IMAGE_READERS, Role
from neuronova_lib.uids import valid_uid

from ..auditing import write_audit
from ..deps import SessionDep, SettingsDep, TokenServiceDep
from .signin import current_session, login_url, public_prefix

router = APIRouter(prefix="/studies", tags=["viewer"])

#: OHIF's viewer route under the viewer's path (its basic "viewer" mode).
OHIF_VIEWER_ROUTE = "/pacs-viewer/viewer"
_NO_STORE = {"Cache-Control": "no-store"}


@router.get(
    "/{study_uid}/ohif",
    response_class=RedirectResponse,
    status_code=303,
    responses={303: {"description": "To OHIF with a token for this study, or to sign in"},
               400: {"description": "Not a study UID"},
               403: {"description": "The signed-in role may not read images"}},
)
def open_in_ohif(study_uid: str, request: Request, db: SessionDep, settings: SettingsDep,
                 tokens: TokenServiceDep) -> Response:
    """Redirect this browser's user to OHIF showing ``study_uid``, with a token for it only."""
    here = f"/api/studies/{study_uid}/ohif" if valid_uid(study_uid) else "/"
    active = current_session(request, db, settings)
    if active is None:
        return RedirectResponse(login_url(settings, here), status_code=303, headers=_NO_STORE)
    if not valid_uid(study_uid):
        write_audit(db, request, decision="deny", status=400, reason="bad_uid",
                    username=active.username, role=active.role,
                    detail=f"not a study UID: {study_uid[:80]!r}")
        db.commit()
        return PlainTextResponse(f"{study_uid[:80]!r} is not a DICOM study UID", 400,
                                 headers=_NO_STORE)
    if Role(active.role) not in IMAGE_READERS:
        write_audit(db, request, decision="deny", status=403, reason="role",
                    username=active.username, role=active.role, study=study_uid)
        db.commit()
        return PlainTextResponse(f"your role ({active.role}) may not read images", 403,
                                 headers=_NO_STORE)
    ttl = min(settings.viewer_token_ttl, settings.signed_url_ttl_max)
    token, claims = tokens.mint(active.username, active.role, "signed", ttl,
                                studies=[study_uid], parent=session_token_parent(active.id_hash))
    write_audit(db, request, decision="allow", status=303, reason="ohif_open",
                username=active.username, role=active.role, study=study_uid,
                detail=f"ttl={ttl}s", token_id=str(claims["jti"]))
    db.commit()
    query = urlencode({"StudyInstanceUIDs": study_uid, "token": token})
    return RedirectResponse(f"{public_prefix(settings)}{OHIF_VIEWER_ROUTE}?{query}",
                            status_code=303, headers=_NO_STORE)
