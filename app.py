"""Concept-erasure workbench: `streamlit run app.py`.

The router: the sidebar lists the pages under their names (Home first), with Material icons
(bundled with Streamlit, so they render offline, unlike emoji on a server without emoji fonts). The pages (pages/*.py)
share one model bundle, one Store and one job manager per server process
(workbench/ui/resources.py); each user's edit lives in their own session (workbench/ui/draft.py).
"""

from __future__ import annotations

import os

# Quiet serving: pages show every build's progress themselves; library progress bars (model
# loading, SAE training) would only fill the server log. Set before anything imports tqdm.
os.environ.setdefault("TQDM_DISABLE", "1")

import streamlit as st  # noqa: E402

import workbench  # noqa: E402, F401  (first, so its MKL setting precedes torch: workbench/models/memory.py)

PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/5_Erase_a_concept.py", title="Erase a concept", icon=":material/ink_eraser:", url_path="Erase_a_concept"),
    st.Page("pages/1_Feature_browser.py", title="Feature browser", icon=":material/search:", url_path="Feature_browser"),
    st.Page("pages/2_Concept_vectors.py", title="Concept vectors", icon=":material/explore:", url_path="Concept_vectors"),
    st.Page("pages/3_Neurons.py", title="Neurons", icon=":material/neurology:", url_path="Neurons"),
    st.Page("pages/4_Edit_and_preview.py", title="Edit and preview", icon=":material/edit:", url_path="Edit_and_preview"),
    st.Page("pages/6_Edit_library.py", title="Edit library", icon=":material/library_books:", url_path="Edit_library"),
]

st.navigation(PAGES).run()
