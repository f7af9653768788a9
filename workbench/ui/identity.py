"""Who the current user is, as an owner id for their jobs, results and exports.

- With OIDC login on (`WORKBENCH_OIDC=1`, Streamlit's `st.user`), the logged-in identity: the
  token's email (else its `sub`), as a readable slug plus a hash of the whole identity.
- Otherwise an anonymous id per browser, `anon-<16 hex>`, kept in the `workbench_owner` cookie so
  a reload or a second tab keeps the same owner. Streamlit reads cookies only from the request
  that opened the page (`st.context.cookies`), so a new id is written from the page with a line of
  JavaScript (`st.html(..., unsafe_allow_javascript=True)`, not iframed: it sets the app's own
  cookie) and is read back on the next load. Without a browser request (AppTest, bare mode) the
  id lives in the session only.

An anonymous id keeps honest users apart; it is not a login (anyone can copy a cookie): use OIDC
where users must not be able to act as each other. A cookie is taken only in the form this module
writes, so it can never name the server's own jobs or a logged-in user. Every id is a safe token
(`jobs.check_owner`): it names folders under `cache/exports/`.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid

import streamlit as st

COOKIE = "workbench_owner"
SESSION_KEY = "_workbench_owner"
COOKIE_MAX_AGE_S = 400 * 86400  # the longest lifetime browsers keep a cookie
ANONYMOUS = re.compile(r"anon-[0-9a-f]{16}")  # only ids this module made: a cookie cannot name 'server' or a login


def oidc_enabled() -> bool:
    """Whether this server asks for Streamlit's OIDC login (`WORKBENCH_OIDC`)."""
    return bool(os.environ.get("WORKBENCH_OIDC"))


def logged_in_user() -> str | None:
    """The OIDC identity of this session (email, else subject), or None without a login."""
    if not oidc_enabled() or not st.user.is_logged_in:
        return None
    name = st.user.get("email") or st.user.get("sub")
    return str(name) if name else None


def owner_of_user(user: str) -> str:
    """A logged-in identity as a safe owner token: a readable slug and a hash of the whole name
    (two names that slug alike, 'a.b@x' and 'a-b@x', stay two owners)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", user).strip("-")[:40] or "user"
    return f"{slug}-{hashlib.sha256(user.encode()).hexdigest()[:8]}"


def _anonymous(owner: object) -> bool:
    return isinstance(owner, str) and ANONYMOUS.fullmatch(owner) is not None


def current_owner() -> str:
    """This session's owner id (see the module docstring)."""
    user = logged_in_user()
    if user is not None:
        return owner_of_user(user)
    owner = st.session_state.get(SESSION_KEY)
    if _anonymous(owner):
        return str(owner)
    cookie = st.context.cookies.get(COOKIE)
    owner = cookie if _anonymous(cookie) else f"anon-{uuid.uuid4().hex[:16]}"
    st.session_state[SESSION_KEY] = owner
    return str(owner)


def remember_browser() -> None:
    """Write this session's anonymous id into the browser's cookie, unless the page's request
    already carried it (a logged-in user needs none; neither does a run without a browser)."""
    if logged_in_user() is not None or not st.context.headers:
        return
    owner = current_owner()
    if st.context.cookies.get(COOKIE) == owner:
        return
    st.html(f"<script>document.cookie = '{COOKIE}={owner}; path=/; max-age={COOKIE_MAX_AGE_S}; SameSite=Lax';"
            "</script>", unsafe_allow_javascript=True)
