"""The Policies page: every policy with its mode, owner, validation status, firings and versions; dry runs; modes.

What it shows: the live set, read from the configured policy directory with
the controller's loader (:mod:`dashboard.policy_files`), each policy with the
mode it is planned in (its file's ``spec.mode``, or an admin's override from
the knowledge base), whether it is paused, its owner, and every refused file
with its error (file, line, field); a chart of the decisions each policy
made per day; then, for the policy picked (kept in the address as
``?page=Policies&policy=NAME``), its firings per day by status, the versions
the knowledge base recorded with a diff between any two, and a dry run of
an edited text over the last days (:mod:`dashboard.policy_dry_run`: the
engine of ``mape policy simulate``; it writes nothing, and anyone signed in
may run it). Last, the trail's policy events (loaded, refused, mode changed,
paused, resumed).

What admins do here: set the policy's mode (enforce, dry-run, off) or clear
the override (:mod:`mape.access.modes`), and pause or resume it
(:mod:`mape.access.pausing`); ``mape policy mode`` and ``mape pause``
make the same acts. The buttons are drawn for admins only, and each act
checks the role again where it is carried out and appends an audit event.

Who calls it: :mod:`dashboard.app`, on every run of the page. Reads go
through :mod:`knowledge.policy_history` and :mod:`knowledge.policy_modes`:
bounded, aggregated in SQL.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import streamlit as st
from sqlmodel import Session

from dashboard.context import PageContext
from dashboard.policy_dry_run import MAX_DAYS, DryRun, DryRunRefused, check_edited, dry_run
from dashboard.policy_files import live_set
from dashboard.range_end import range_end
from knowledge import policy_history, policy_modes, queries
from knowledge.database import session_scope
from knowledge.tables import Pause, PauseScope, PolicyMode, PolicyModeOverride, PolicyVersion
from mape.access import Identity, Role
from mape.access.modes import clear_policy_mode, set_policy_mode
from mape.access.pausing import pause_policy, resume_policy
from mape.errors import MapeError
from mape.plan.loader import LoadedPolicy, PolicyLoadResult

_FLASH = "mape_policies_flash"
_RESULT = "mape_policies_dry_run"
#: The choice that lifts an override: the file's ``spec.mode`` applies again.
FILE_MODE = "as the file says"
RANGES = {"7 days": 7, "14 days": 14, "30 days": 30, "90 days": 90}


def render(session: Session, identity: Identity, context: PageContext) -> None:
    st.title("Policies")
    flash = st.session_state.pop(_FLASH, None)
    if flash is not None:
        (st.success if flash[0] == "ok" else st.error)(flash[1])
    now = range_end(session)
    loaded = live_set(context.settings)
    live = {p.name: p for p in loaded.policies}
    overrides = policy_modes.overrides(session)
    paused = {p.name: p for p in queries.pauses(session) if p.scope == PauseScope.policy.value}
    recorded = policy_history.version_summaries(session)
    days = RANGES[st.radio("Firings over the last", list(RANGES), index=1, horizontal=True, key="policies-range")]
    firings = policy_history.firing_by_day(session, since=now - timedelta(days=days), until=now)
    st.caption(f"Policy directory: `{context.settings.policies_dir}`")
    _refused(loaded)
    names = sorted(set(live) | set(recorded) | set(overrides) | set(paused))
    if not names:
        st.info(f"No policy is live or recorded: {context.settings.policies_dir} has no policy file that loads, and "
                "the knowledge base has recorded none. Add a policy file (see policies/README.md) and check it with "
                "`mape policy validate`.")
        return
    st.dataframe(_overview(names, live, overrides, paused, recorded, firings), hide_index=True,
                 width="stretch")
    _firing_chart(firings, color="policy", title=f"Decisions per day by policy, last {days} days")
    st.divider()
    name = _picked(names)
    _detail(session, identity, context, name, live.get(name), loaded, overrides.get(name), paused.get(name),
            [f for f in firings if f.policy == name], days, now)
    st.divider()
    _trail(session, now)


# --------------------------------------------------------------------------------------------- the list


def _refused(loaded: PolicyLoadResult) -> None:
    """Every file the loader refused, with its errors; the controller refuses the same files."""
    by_file: dict[str, list[str]] = {}
    for error in loaded.errors:
        by_file.setdefault(str(error.source or "?"), []).append(str(error))
    for source, errors in by_file.items():
        st.error(f"Refused: {source} is not loaded (the controller keeps its last good version, if any):\n\n"
                 + "\n\n".join(f"`{e}`" for e in errors))


def mode_of(policy: LoadedPolicy | None, override: PolicyModeOverride | None) -> str:
    """The mode the planner plans a policy in: the override's, else the file's (``-``: neither is known)."""
    if override is not None:
        return override.mode
    return policy.policy.spec.mode if policy is not None else "-"


def _overview(names: Sequence[str], live: dict[str, LoadedPolicy], overrides: dict[str, PolicyModeOverride],
              paused: dict[str, Pause], recorded: dict[str, policy_history.VersionSummary],
              firings: Sequence[policy_history.FiringDay]) -> pd.DataFrame:
    fired: dict[str, int] = {}
    last: dict[str, datetime] = {}
    for f in firings:
        fired[f.policy] = fired.get(f.policy, 0) + f.decisions
        last[f.policy] = max(last.get(f.policy, f.last), f.last)
    rows = []
    for name in names:
        policy, override = live.get(name), overrides.get(name)
        summary = recorded.get(name)
        rows.append({
            "policy": name, "mode": mode_of(policy, override) + (" (override)" if override is not None else ""),
            "paused": f"by {paused[name].paused_by}" if name in paused else "",
            "owner": policy.policy.metadata.owner if policy is not None else "",
            "status": "valid" if policy is not None else "not in the live set",
            "action": policy.action if policy is not None else "",
            "decisions": fired.get(name, 0), "last fired": last.get(name),
            "versions": summary.versions if summary is not None else 0,
            "file": policy.source if policy is not None else "",
        })
    return pd.DataFrame(rows)


def bars(rows: list[dict[str, Any]], *, x: str, x_title: str, color: str, title: str) -> dict[str, Any]:
    """A Vega-Lite stacked bar chart of ``decisions`` over time ``x``, coloured by ``color``, as a plain dict.

    Built as a dict rather than through Altair's objects, which cost the Model
    page 0.6 to 0.9 s per chart on this machine (see :mod:`dashboard.charts`).
    """
    fields = sorted({key for row in rows for key in row})
    return {"title": title, "data": {"values": rows}, "mark": {"type": "bar", "tooltip": True},
            "encoding": {"x": {"field": x, "type": "temporal", "title": x_title},
                         "y": {"aggregate": "sum", "field": "decisions", "type": "quantitative", "title": "decisions"},
                         "color": {"field": color, "type": "nominal"},
                         "tooltip": [{"field": f, "type": "temporal" if f == x else "nominal"} for f in fields]}}


def _firing_chart(firings: Sequence[policy_history.FiringDay], *, color: str, title: str) -> None:
    if not firings:
        st.info(f"{title}: none (no policy fired in this range).")
        return
    rows = [{"day": f.day.isoformat(), "policy": f.policy, "status": f.status, "decisions": f.decisions}
            for f in firings]
    st.vega_lite_chart(spec=bars(rows, x="day", x_title="day (UTC)", color=color, title=title), width="stretch")


def _picked(names: Sequence[str]) -> str:
    """The policy shown in detail: the address's ``policy=`` when it names one, kept in the address."""
    if st.session_state.get("policies-policy") not in names:
        asked = st.query_params.get("policy")
        st.session_state["policies-policy"] = asked if asked in names else names[0]
    name: str = st.selectbox("Policy", list(names), key="policies-policy")
    st.query_params["policy"] = name
    return name


# --------------------------------------------------------------------------------------------- one policy


def _detail(session: Session, identity: Identity, context: PageContext, name: str, policy: LoadedPolicy | None,
            loaded: PolicyLoadResult, override: PolicyModeOverride | None, pause: Pause | None,
            firings: list[policy_history.FiringDay], days: int, now: datetime) -> None:
    st.header(f"Policy {name}")
    if policy is None:
        st.warning(f"{name} is not in the live set: no file of {context.settings.policies_dir} defines it (removed, "
                   "renamed, or refused above). What the knowledge base recorded of it is below.")
    else:
        meta = policy.policy.metadata
        st.write(f"Owner **{meta.owner or '-'}** · file `{policy.source}` · valid · version `{policy.sha256[:12]}`"
                 + (f" · {meta.description}" if meta.description else ""))
    file_mode = policy.policy.spec.mode if policy is not None else None
    if override is not None:
        st.write(f"Mode **{override.mode}**: set by {override.set_by} at {override.set_at:%Y-%m-%d %H:%M} UTC "
                 f"({override.reason}); the file says {file_mode or '-'}.")
    else:
        st.write(f"Mode **{file_mode or '-'}**, as the file says.")
    if pause is not None:
        st.warning(f"Paused by {pause.paused_by} at {pause.paused_at:%Y-%m-%d %H:%M} UTC: {pause.reason}. Its "
                   "decisions are recorded as suppressed.")
    if identity.role.allows(Role.admin):
        _admin_controls(context, name, override, pause)
    else:
        st.caption(f"You are signed in as a {identity.role.value}: an admin changes modes and pauses "
                   "(or `mape policy mode`, `mape pause` at the command line).")
    st.subheader("Firings")
    if firings:
        newest = max(f.last for f in firings)
        st.write(f"Last fired {newest:%Y-%m-%d %H:%M} UTC; {sum(f.decisions for f in firings)} decisions in the "
                 f"last {days} days.")
        _firing_chart(firings, color="status", title=f"Decisions of {name} per day by status")
    else:
        st.info(f"{name} made no decision in the last {days} days.")
    _versions(session, name)
    _dry_run_form(context, name, policy, loaded, now)


def _admin_controls(context: PageContext, name: str, override: PolicyModeOverride | None,
                    pause: Pause | None) -> None:
    with st.container(border=True):
        st.markdown("**Admin**")
        choices = [m.value for m in PolicyMode] + [FILE_MODE]
        left, right = st.columns([1, 2])
        left.selectbox("Mode", choices, index=choices.index(override.mode) if override is not None else len(choices) - 1,
                       key=f"mode-{name}")
        right.text_input("Reason", key=f"mode-reason-{name}", placeholder="Why (kept in the audit trail)")
        st.button("Apply mode", key=f"apply-mode-{name}", type="primary", on_click=_change_mode, args=(context, name))
        if pause is None:
            st.text_input("Pause reason", key=f"pause-reason-{name}",
                          placeholder="Why (shown in every decision the pause suppresses)")
            st.button("Pause policy", key=f"pause-{name}", on_click=_pause, args=(context, name, True))
        else:
            st.button("Resume policy", key=f"resume-{name}", on_click=_pause, args=(context, name, False))


def _change_mode(context: PageContext, name: str) -> None:
    """The button's callback: set or clear the override; :mod:`mape.access.modes` checks the role again."""
    mode = st.session_state.get(f"mode-{name}", FILE_MODE)
    reason = st.session_state.get(f"mode-reason-{name}", "")
    try:
        identity = context.identity()
        with session_scope(context.engine) as session:
            at = datetime.now(timezone.utc)
            if mode == FILE_MODE:
                lifted = clear_policy_mode(session, name, identity, reason=reason, at=at)
                text = (f"policy {name}: override {lifted.mode} lifted by {identity.name}; its file's mode applies "
                        "from the next tick" if lifted is not None else f"policy {name} has no override to lift")
            else:
                row = set_policy_mode(session, name, mode, identity, reason=reason, at=at)
                text = f"{row}; the planner plans it in {row.mode} from the next tick"
    except MapeError as exc:
        st.session_state[_FLASH] = ("error", str(exc))
        return
    st.session_state[_FLASH] = ("ok", text)


def _pause(context: PageContext, name: str, pausing: bool) -> None:
    """The button's callback: pause or resume; :mod:`mape.access.pausing` checks the role again."""
    try:
        identity = context.identity()
        with session_scope(context.engine) as session:
            at = datetime.now(timezone.utc)
            if pausing:
                row, created = pause_policy(session, name, identity, at=at,
                                            reason=st.session_state.get(f"pause-reason-{name}", ""))
                text = str(row) if created else f"policy {name} is already paused: {row}"
            else:
                lifted = resume_policy(session, name, identity, at=at)
                text = (f"policy {name} resumed by {identity.name}" if lifted is not None
                        else f"policy {name} is not paused")
    except MapeError as exc:
        st.session_state[_FLASH] = ("error", str(exc))
        return
    st.session_state[_FLASH] = ("ok", text)


def _versions(session: Session, name: str) -> None:
    st.subheader("Versions")
    rows = policy_history.versions(session, name, limit=50)
    if not rows:
        st.info(f"The knowledge base recorded no version of {name} yet: the controller records a version when it "
                "first plans with it.")
        return
    st.dataframe(pd.DataFrame([{"recorded": v.loaded_at, "sha256": v.sha256[:12], "author": v.author,
                                "source": v.source} for v in rows]), hide_index=True, width="stretch")
    if len(rows) < 2:
        st.caption("One version recorded: nothing to compare yet.")
        return
    labels = [_label(v) for v in rows]
    left, right = st.columns(2)
    old = left.selectbox("From", labels, index=1, key=f"diff-from-{name}")
    new = right.selectbox("To", labels, index=0, key=f"diff-to-{name}")
    st.code(version_diff(rows[labels.index(old)], rows[labels.index(new)]) or "(the same text)", language="diff")


def _label(version: PolicyVersion) -> str:
    return f"{version.loaded_at:%Y-%m-%d %H:%M} {version.sha256[:12]}"


def version_diff(old: PolicyVersion, new: PolicyVersion) -> str:
    """The unified diff between two recorded versions' texts, headed by their hashes."""
    return "".join(difflib.unified_diff(old.text.splitlines(keepends=True), new.text.splitlines(keepends=True),
                                        fromfile=f"{old.name} {old.sha256[:12]}", tofile=f"{new.name} {new.sha256[:12]}"))


# --------------------------------------------------------------------------------------------- dry run


def _dry_run_form(context: PageContext, name: str, policy: LoadedPolicy | None, loaded: PolicyLoadResult,
                  now: datetime) -> None:
    st.subheader("Dry run")
    st.caption("Replays the recorded ticks through the live set with this text in place of the policy (or added, if "
               "its name is new), as `mape policy simulate` does. Nothing is written, and no file is changed. "
               "Mode overrides and pauses in the knowledge base are not applied: the text's mode is.")
    with st.form(f"dry-run-{name}"):
        text = st.text_area("Policy YAML", value=policy.text if policy is not None else "", height=320,
                            key=f"dry-run-text-{name}")
        days = st.number_input("Days", min_value=1, max_value=MAX_DAYS, value=7, step=1, key=f"dry-run-days-{name}")
        submitted = st.form_submit_button(f"Simulate last N days (at most {MAX_DAYS})")
    if submitted:
        st.session_state[_RESULT] = (name, _simulate(context, text, policy, loaded, int(days), now))
    kept = st.session_state.get(_RESULT)
    if kept is not None and kept[0] == name:
        _show(*kept[1])


def _simulate(context: PageContext, text: str, policy: LoadedPolicy | None, loaded: PolicyLoadResult, days: int,
              now: datetime) -> tuple[str, Any]:
    """("errors", messages), ("refused", message) or ("done", DryRun)."""
    source = f"{policy.source if policy is not None else 'policy'} (edited)"
    edited, errors = check_edited(text, source, context.settings)
    if edited is None:
        return "errors", [str(e) for e in errors]
    try:
        with st.spinner(f"Replaying the last {days} days..."):
            return "done", dry_run(context.engine, context.settings, loaded.policies, edited, days=days, now=now)
    except MapeError as exc:
        return "refused", str(exc)


def _show(kind: str, found: Any) -> None:
    if kind == "errors":
        st.error("The edited text is not a valid policy; nothing was simulated:\n\n"
                 + "\n\n".join(f"`{e}`" for e in found))
        return
    if kind == "refused":
        st.error(f"Not simulated: {found}")
        return
    result: DryRun = found
    s = result.summary
    how = "in place of the live one" if result.replaced else "added to the live set"
    st.success(f"Dry run of {result.policy} ({how}): {s.ticks} ticks of {s.models} model{'' if s.models == 1 else 's'} "
               f"replayed in "
               f"{s.seconds:.1f} s; it would have made {result.acting('simulated')} acting decisions "
               f"(live: {result.acting('live')}).")
    if result.buckets:
        rows = [{"time": at.isoformat(), "status": status, "decisions": n}
                for (at, status), n in sorted(result.buckets.items())]
        st.vega_lite_chart(spec=bars(rows, x="time", x_title=f"{result.bucket} (UTC)", color="status",
                                title=f"Simulated decisions of {result.policy} per {result.bucket}"),
                           width="stretch")
        st.dataframe(pd.DataFrame([{"model": m, "action": a, "status": st_, "simulated": c["simulated"],
                                    "live": c["live"]} for (m, a, st_), c in sorted(result.outcomes.items())]),
                     hide_index=True, width="stretch")
    else:
        st.info(f"{result.policy} would not have fired in the replayed range.")
    st.code("\n".join(s.lines()), language="text")


# --------------------------------------------------------------------------------------------- the trail


def _trail(session: Session, now: datetime) -> None:
    st.subheader("Policy events, last 30 days")
    events = policy_history.policy_events(session, since=now - timedelta(days=30), limit=100)
    if not events:
        st.info("No policy was loaded, refused, paused or had its mode changed in the last 30 days.")
        return
    st.dataframe(pd.DataFrame([{"time": e.time, "kind": e.kind, "subject": e.subject, "actor": e.actor,
                                "detail": _detail_of(e.payload)} for e in events]),
                 hide_index=True, width="stretch")


def _detail_of(payload: dict[str, Any]) -> str:
    keys = ("mode", "previous_override", "reason", "error", "sha256", "source")
    return "; ".join(f"{k}: {payload[k]}" for k in keys if payload.get(k) not in (None, ""))
