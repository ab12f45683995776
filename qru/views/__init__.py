"""What the dashboard pages draw, built from stored (pre-binned) results: tables, plotly figures, marked-up probe
text, run-form arguments. No streamlit here; no computation on models."""
