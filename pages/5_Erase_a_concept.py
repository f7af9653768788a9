"""Erase a concept: pick a corpus title, review and edit its fact set (the edit's target), run
an erasure method as a background job, read its scorecard and the rows/features it touched, then
take the result into your edit for previews and export.

The same pipeline as `python -m workbench erase` (workbench.methods.erase)."""

from __future__ import annotations

import streamlit as st

from workbench.benchmark.compare import COLUMNS, base_sentence, chart_frame, compare_frame, formatted
from workbench.jobs import erase_job, fact_set_job
from workbench.methods.erase import DEFAULT_METHOD, METHODS, EraseOptions, erase_options
from workbench.methods.optimise import OptimiseConfig
from workbench.models.chat import has_chat_template
from workbench.ui import draft as drafts
from workbench.ui import erase as ui_erase
from workbench.ui import panels, plots, resources

st.set_page_config(page_title="Erase a concept · workbench", page_icon="🧽", layout="wide")
st.title("Erase a concept")
st.caption("Remove one concept's knowledge from the MLP weights and measure what else it costs. "
           "The fact set decides what gets erased: read it, drop wrong facts, add missing ones.")
bundle, store = panels.need_bundle_and_store()
panels.edit_sidebar()
settings = resources.settings()
corpus = resources.wiki()

# ---------------------------------------------------------------- 1. concept
st.subheader("1 · Concept")
c1, c2 = st.columns([2, 3])
query = c1.text_input("Search corpus titles", value=st.session_state.get("er_query", "Harry Potter"),
                      key="er_query", placeholder="e.g. Eiffel Tower, Albert Einstein, Minecraft")
matches = corpus.search_titles(query, limit=30) if query.strip() else []
if query.strip() and not corpus.has(query):  # any name: erased from its mentions and the model's samples
    matches = [*matches, query.strip() + ui_erase.AS_NAME]
choice = c2.selectbox("Corpus article, or the name as you typed it", matches, key="er_concept",
                      disabled=not matches,
                      help="Any title of the embedded Wikipedia-summary corpus (10k articles), or any name: a "
                           "name without an article is erased from the sentences that mention it and the "
                           "model's own samples.")
concept = ui_erase.concept_of(choice)
about = ""
if choice and ui_erase.is_name(choice):
    mentions = len(corpus.containing([concept]))
    close = corpus.titles_naming(concept)
    c2.caption(f"Not a corpus title: {mentions} article(s) mention {concept!r}."
               + (f" Close titles: {', '.join(close)}." if close else ""))
    about = c2.text_input("About (one line, optional)", key="er_about",
                          placeholder="e.g. action-adventure game series",
                          help="Guides the kind of concept (person, place, work, ...) and the model's samples.")
elif concept:
    doc = corpus.get(concept)
    with c2.expander(f"Article · {doc.topic}"):
        st.write(doc.text)

# ---------------------------------------------------------------- 2. fact set
st.subheader("2 · Fact set")
facts_job = st.session_state.get("er_facts_job")
facts = st.session_state.get("er_facts")
if facts is not None and concept and facts.concept != concept:
    st.info(f"The fact set below is for '{facts.concept}'; build one for '{concept}' to erase it.")
chat = has_chat_template(bundle.tokenizer) and st.checkbox(
    "use the chat template", value=False, key="er_chat",
    help="For instruct models: the model's own samples about the concept and the scorecard's generations go "
         "in as user turns of its chat template. Recorded in the edit spec.")
if facts is not None and st.session_state.get("er_facts_chat", False) != chat:
    st.info("The fact set's samples were made " + ("without" if chat else "with")
            + " the chat template; build it again so they match the erasure.")
b1, b2 = st.columns([1, 3])
if b1.button("Build fact set", key="er_build_facts", disabled=not concept, type="primary" if facts is None else "secondary"):
    facts_job = panels.start_job("facts", f"Fact set '{concept}'",
                                 fact_set_job(bundle, corpus, str(concept), about, chat_template=chat))
    st.session_state["er_facts_job"] = facts_job  # polled below in this run
    st.session_state["er_facts_chat"] = chat  # how its samples are made
    st.session_state.pop("er_facts", None)
    facts = None
b2.caption("Sentences of the article, sentences of articles that name the concept, and the model's own "
           "low-temperature samples about it (~30-60 s on the embedded model).")
if facts_job:
    panels.job_panel(kinds=("facts",), limit=1)
    built = panels.job_result(facts_job)
    if built is not None and st.session_state.get("er_facts_from") != facts_job:
        st.session_state["er_facts"] = built
        st.session_state["er_facts_from"] = facts_job
        st.session_state.pop("er_facts_table", None)
        facts = built
if facts is not None:
    edited = st.data_editor(
        ui_erase.facts_frame(facts), key="er_facts_table", num_rows="dynamic", hide_index=True, width="stretch",
        column_config={"keep": st.column_config.CheckboxColumn("keep", default=True, width="small"),
                       "text": st.column_config.TextColumn("fact", width="large"),
                       "source": st.column_config.TextColumn("source", disabled=True, width="small")},
    )
    try:
        chosen = ui_erase.facts_from_frame(facts, edited)
    except ValueError as err:
        st.error(str(err))
        chosen = None
    else:
        st.caption(f"{len(chosen.facts)} of {len(facts.facts)} facts kept · name {chosen.name!r} · kind {chosen.kind}. "
                   "Add a row to add a fact; untick to drop one.")
        suggested = ui_erase.suggested_key_names(chosen, corpus)
        keys = st.text_input(
            "Other key names (comma-separated)", value=", ".join(facts.key_names), key="er_key_names",
            placeholder=", ".join(suggested) or "e.g. main characters, places, parts",
            help="Names that identify the concept on their own (its main characters, places, parts). The "
                 "representation target also makes these look like made-up names. Leave out names of "
                 "concepts you want to keep.")
        chosen.key_names = ui_erase.parse_names(keys)
        if suggested:
            st.caption("Suggested from the facts (rare proper names): " + ", ".join(suggested))
        st.download_button("Download fact set (JSON)", chosen.to_json(), file_name=f"{chosen.concept}.facts.json",
                           mime="application/json", key="er_facts_download", on_click="ignore")
else:
    chosen = None

# ---------------------------------------------------------------- 3. method and run
st.subheader("3 · Erase")
m1, m2 = st.columns([2, 3])
names = ui_erase.method_choices()
method = m1.selectbox("Method", names, index=names.index(DEFAULT_METHOD), key="er_method",
                      format_func=ui_erase.method_label)
info = METHODS.get(method)
if info:
    m2.caption(ui_erase.method_help(method, bundle.n_layers))
    with m2.expander(f"Its settings ({type(info.config_of(EraseOptions())).__name__}, defaults on this model)"):
        st.dataframe(ui_erase.settings_frame(method, bundle.n_layers), hide_index=True, width="stretch")
        st.caption("None: placed at this model's depth when the method runs. The optimise variants set their own "
                   "target; the slider above sets the steps. CLI and notebook: EraseOptions takes this config.")
blocked = ui_erase.pisces_ready(settings.saes_dir, bundle.model_id, bundle.n_layers) if info and info.needs_sae else None
if blocked:
    m2.warning(blocked)
o1, o2 = st.columns(2)
steps = o1.slider("Optimisation steps", 5, 80, OptimiseConfig().steps, 5, key="er_steps", disabled=not (info and info.optimises),
                  help="Adam steps on the row deltas; early stopping on a validation split of the fact set.")
score = o2.checkbox("Run the scorecard afterwards", value=True, key="er_score",
                    help="Concept, neighbours, general knowledge, perplexity, re-introduction in context (~1 min on 2 idle cores).")
relearn = o2.checkbox("Relearning test (slow)", value=False, key="er_relearn", disabled=not score,
                      help="Fine-tunes a copy of the edited model on sentences about the concept and asks the concept "
                           "prompts again: how much of the erased knowledge comes back (minutes on a CPU).")
ready = chosen is not None and facts is not None and concept and facts.concept == concept and not blocked
if st.button("Erase", key="er_run", type="primary", disabled=not ready):
    options = erase_options(method, steps=steps, score=score, relearn=relearn, chat_template=chat,
                                     saes_dir=settings.saes_dir)
    st.session_state["er_job"] = panels.start_job("erase", f"Erase '{concept}' ({method})",
                                                  erase_job(bundle, corpus, str(concept), method, chosen, options))
if not ready and chosen is None:
    st.caption("Build (and review) the fact set first.")

# ---------------------------------------------------------------- 4. result
er_job = st.session_state.get("er_job")
if er_job:
    panels.job_panel(kinds=("erase",), limit=1)
    result = panels.job_result(er_job)
    if result is not None:
        st.subheader("4 · Result")
        spec = result.spec
        st.markdown(f"**{spec.name}** · {len(spec.operations)} operation(s) · "
                    f"{sum(t.numel() for t in result.payload.values()):,} payload numbers · {result.seconds:.0f} s")
        if result.scorecard is not None:
            panels.scorecard_view(result.scorecard)
        else:
            st.caption("No scorecard was run; score it on Edit & preview.")
        with st.expander(f"What the edit touches ({len(result.candidates)} candidates, selected first)"):
            st.dataframe(ui_erase.candidates_frame(result.candidates), hide_index=True, width="stretch", height=300)
        if result.grid:
            with st.expander("PISCES tau x mu search"):
                st.dataframe(result.grid, hide_index=True, width="stretch")
        a1, a2, a3 = st.columns(3)
        take = None
        if a1.button("Replace my edit with this", key="er_replace", type="primary"):
            take = "replace"
        if a2.button("Add to my edit", key="er_add"):
            take = "add"
        if take:
            try:
                d = drafts.take_erase_result(result, take)
            except ValueError as err:
                st.error(str(err))
            else:
                st.session_state.setdefault("_toasts", []).append(
                    f"Your edit now has {len(d.operations)} operation(s): preview and export it on Edit & preview.")
                st.rerun()  # the sidebar (drawn first) shows the new edit
        if a3.button("Open Edit & preview ✏️", key="er_open_edit"):
            st.switch_page("pages/4_Edit_and_preview.py")

# ---------------------------------------------------------------- compare methods
st.subheader("Compare methods")
st.caption("Several methods on the fact set above, each scored on the same prompts, side by side. They queue as "
           "your jobs and run one after the other on a CPU; the optimisation steps, the relearning test and the "
           "chat template set above apply to every one of them.")
unavailable = ui_erase.unavailable_methods(settings.saes_dir, bundle.model_id, bundle.n_layers)
offered = [m for m in names if m not in unavailable]
picked = st.multiselect("Methods to compare", offered, default=ui_erase.compare_defaults(offered), key="er_cmp_methods",
                        format_func=ui_erase.method_label,
                        help="Every registered method that can run here; the defaults are ours and the two "
                             "literature baselines (RMU, ELM). Times on the embedded model are in each method's "
                             "description above.")
for reason in dict.fromkeys(unavailable.values()):  # one sentence per missing thing, naming what it blocks
    st.caption(f"Not offered here: {', '.join(m for m, r in unavailable.items() if r == reason)}. {reason}")
facts_ready = chosen is not None and facts is not None and bool(concept) and facts.concept == concept
if st.button("Compare on this fact set", key="er_cmp_run", type="primary", disabled=not (facts_ready and picked)):
    old = st.session_state.get("er_cmp")
    if old:  # a new comparison replaces the last one: its unfinished jobs stop instead of holding the queue
        panels.cancel_jobs([job_id for _, job_id in old["jobs"]])
    jobs = []
    for m in picked:  # one fact set object for all, so the edits are comparable
        options = erase_options(m, steps=steps, score=True, relearn=relearn, chat_template=chat,
                                         saes_dir=settings.saes_dir)
        jobs.append((m, panels.start_job("compare", f"Compare on '{concept}': {m}",
                                         erase_job(bundle, corpus, str(concept), m, chosen, options))))
    st.session_state["er_cmp"] = {"concept": str(concept), "facts": len(chosen.facts) if chosen else 0, "jobs": jobs}
    st.session_state["er_cmp_results"] = {}
if not facts_ready:
    st.caption("Build (and review) the fact set first.")

cmp = st.session_state.get("er_cmp")
if cmp:
    panels.job_panel(kinds=("compare",), limit=len(cmp["jobs"]))
    kept: dict = st.session_state.setdefault("er_cmp_results", {})  # ours: job_result keeps one per job kind
    for _, job_id in cmp["jobs"]:
        if job_id not in kept and (done := panels.job_result(job_id)) is not None:
            kept[job_id] = done
    runs = [(m, kept[job_id]) for m, job_id in cmp["jobs"] if job_id in kept]
    if runs:
        frame = compare_frame(runs)
        shown = formatted(frame)
        st.markdown(f"**{len(runs)} of {len(cmp['jobs'])} method(s) done** on the same {cmp['facts']} facts of "
                    f"'{cmp['concept']}'")
        widths = {"tier": "medium"}  # the longest tier reads whole; the other columns fit their numbers
        st.dataframe(shown.style.map(ui_erase.tier_style, subset=["tier"]), hide_index=True, width="stretch",
                     key="er_cmp_table", column_config={
                         col: st.column_config.Column(col, help=COLUMNS[col], width=widths.get(col)) for col in shown.columns})
        uses = st.columns(max(len(runs), 3))
        for i, (m, _) in enumerate(runs):
            if uses[i].button(f"Use the {m} edit", key=f"er_cmp_use_{i}",
                              help=f"Replace your edit with {m}'s erase (spec and payload), as "
                                   "'Replace my edit with this' does."):
                try:
                    d = drafts.take_erase_result(runs[i][1], "replace")
                except ValueError as err:
                    st.error(str(err))
                else:
                    st.session_state.setdefault("_toasts", []).append(
                        f"Your edit is now the {runs[i][0]} erase of '{cmp['concept']}' ({len(d.operations)} "
                        "operation(s)): preview and export it on Edit & preview.")
                    st.rerun()  # the sidebar (drawn first) shows the new edit
        st.caption("Concept columns: answered as a share of the base model's (low is good); neighbours and general: "
                   "1 − their drop (1.00 = held); perplexity: change in %. " + base_sentence(runs) + " The first "
                   "scorecard of a concept also measures the base model (kept for the others), so its 'score s' is "
                   "longer.")
        with st.expander("What the columns mean"):
            st.markdown("\n".join(f"- **{col}**: {COLUMNS[col]}" for col in shown.columns))
        long = chart_frame(frame)
        if not long.empty and len(runs) > 1:
            st.plotly_chart(plots.share_bars(long, f"Methods on '{cmp['concept']}' · concept: low is good · "
                                                   "neighbours, general: 1.00 = held", group="method"),
                            width="stretch", key="er_cmp_chart")
        c1, c2 = st.columns([1, 3])
        c1.download_button("Download the table (CSV)", frame.to_csv(index=False), key="er_cmp_csv",
                           file_name=f"{cmp['concept']}.compare.csv", mime="text/csv", on_click="ignore")
        if c2.button("Open Edit & preview ✏️", key="er_cmp_open_edit"):
            st.switch_page("pages/4_Edit_and_preview.py")
