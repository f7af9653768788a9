"""Concept-erasure workbench — home page (placeholder until the full pages land).

Loads the model bundle once per server process and shows its summary.
"""

from __future__ import annotations

import streamlit as st

from workbench.config import Settings
from workbench.models import ModelBundle, load_bundle, parse_source

st.set_page_config(page_title="Concept-erasure workbench", layout="wide")


@st.cache_resource(show_spinner="Loading the model (about 45 s the first time, seconds after) ...")
def shared_bundle(source_text: str) -> ModelBundle:
    return load_bundle(parse_source(source_text), Settings.from_env())


settings = Settings.from_env()
st.title("Concept-erasure workbench")
bundle = shared_bundle(settings.model_source)
st.json(bundle.summary())
