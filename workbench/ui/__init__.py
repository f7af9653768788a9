"""UI-only helpers for the Streamlit pages: shared resources, the per-session edit draft,
spec upload checks, plotly figures and the job panel. No model math and no SQL here."""
